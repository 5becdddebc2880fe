"""Build the training and evaluation datasets from raw problems.

Every builder is a pure function of its input rows and a seed, so the same raw data and config always
give the same tables. Eval suites come only from the test split (and from problems generated to avoid
training keys); ``decontaminate`` then removes every training problem that shares a problem key, a
normalized question or a word n-gram with an eval item (reported, never silently dropped), and
``assert_disjoint`` proves the result before training reads it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass

from pipelines.data.decontamination import find_contamination
from pipelines.data.formats import corpus_document, think_completion
from pipelines.data.problems import TEST_SPLIT, TRAIN_SPLIT, Problem, normalize_question
from pipelines.data.perturbations import PERTURBATIONS, perturbation_for
from pipelines.data.synthetic import domain_shift_problems

TRAINING_PROBLEMS = "training_problems"
IN_DISTRIBUTION = "in_distribution"
PERTURBED = "perturbed"
DOMAIN_SHIFT = "domain_shift"
SUITES = (IN_DISTRIBUTION, PERTURBED, DOMAIN_SHIFT)  # report order: the paper's reading order
_LAST_RESULT = re.compile(r"=\s*(-?\d+(?:\.\d+)?)(?!.*=\s*-?\d)", re.S)


class ContaminationError(ValueError):
    """Raised when an eval item also appears in training data."""


def problems_from_rows(rows: Iterable[dict]) -> list[Problem]:
    return [Problem(**{k: row[k] for k in Problem.__dataclass_fields__}) for row in rows]


def train_problems(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.split == TRAIN_SPLIT]


def build_corpus(problems: list[Problem]) -> list[dict]:
    """Pretraining documents from the training split only: the base must not see eval answers."""
    return [{"problem_id": p.problem_id, "text": corpus_document(p.question, p.solution, p.answer)}
            for p in train_problems(problems)]


def build_sft(problems: list[Problem]) -> list[dict]:
    """Instruct data: question → direct answer, no visible reasoning."""
    return [{"problem_id": p.problem_id, "prompt": p.question, "completion": p.answer, "answer": p.answer}
            for p in train_problems(problems)]


def build_think(problems: list[Problem]) -> list[dict]:
    """Reasoning data: question → <think>worked solution</think> answer."""
    return [{"problem_id": p.problem_id, "prompt": p.question,
             "completion": think_completion(p.solution, p.answer), "answer": p.answer}
            for p in train_problems(problems)]


def wrong_solution(problem: Problem, rng: random.Random) -> tuple[str, str]:
    """A plausible solution that reaches a wrong answer: the last computed result is off by a few.

    Works on any worked solution text: if there is no ``= N`` step, only the final answer changes.
    """
    offset = rng.choice([-3, -2, -1, 1, 2, 3])
    wrong = str(int(float(problem.answer)) + offset) if float(problem.answer).is_integer() \
        else f"{float(problem.answer) + offset:g}"
    match = _LAST_RESULT.search(problem.solution)
    if match is None:
        return problem.solution, wrong
    solution = problem.solution[: match.start(1)] + wrong + problem.solution[match.end(1):]
    return solution, wrong


def build_preference(problems: list[Problem], seed: int) -> list[dict]:
    """Synthetic pairs: chosen = correct worked solution, rejected = one that reaches a wrong answer."""
    rng = random.Random(seed)
    rows = []
    for p in train_problems(problems):
        bad_solution, bad_answer = wrong_solution(p, rng)
        rows.append({"problem_id": p.problem_id, "source": "synthetic", "prompt": p.question,
                     "chosen": think_completion(p.solution, p.answer),
                     "rejected": think_completion(bad_solution, bad_answer),
                     "answer": p.answer, "rejected_answer": bad_answer})
    return rows


def direct_answer_pairs(preference_rows: list[dict]) -> list[dict]:
    """Instruct-branch DPO pairs: the same preferences without the reasoning (answer vs wrong answer).
    A user's own pairs (no ``rejected_answer``) are kept as they are."""
    return [{"problem_id": r["problem_id"], "prompt": r["prompt"], "messages": r.get("messages"),
             "chosen": r["answer"], "rejected": r["rejected_answer"], "answer": r["answer"]}
            if r.get("rejected_answer") is not None else
            {"problem_id": r["problem_id"], "prompt": r["prompt"], "messages": r.get("messages"),
             "chosen": r["chosen"], "rejected": r["rejected"], "answer": r.get("answer")}
            for r in preference_rows]


def build_eval_suites(problems: list[Problem], suite_size: int, seed: int, max_operand: int,
                      extra_suites: dict[str, list[Problem]] | None = None,
                      perturbations: tuple[str, ...] = PERTURBATIONS,
                      answer_types: dict[str, str] | None = None,
                      system_prompts: dict[str, str | None] | None = None,
                      rel_tols: dict[str, float | None] | None = None) -> list[dict]:
    """In-distribution held-out, paired perturbed twins and domain-shifted wording.

    Held-out item i gets one twin of kind ``perturbations[i % len]`` (the next kind if that one does
    not apply, e.g. new numbers need a generator template), so every kind is measured on a similar
    share of items without multiplying the suite. Domain shift needs generator templates; for
    ingested data it is left out. ``extra_suites`` (GSM8K, MATH-500, a user's file) are added as they
    are (their own size: ``pipelines/data/suites.py`` samples them) and checked for overlap with training
    like the rest; ``answer_types`` says how each extra suite's gold answer is graded (default number),
    ``system_prompts`` which suites ask with their own system prompt and ``rel_tols`` which number suites
    accept answers within a relative tolerance (both stored per item, None when unset).
    """
    unknown = sorted(set(perturbations) - set(PERTURBATIONS))
    if unknown or not perturbations:
        raise ValueError(f"perturbations {list(perturbations)}: expected a non-empty subset of {PERTURBATIONS}")
    rng = random.Random(seed)
    held_out = [p for p in problems if p.split == TEST_SPLIT][:suite_size]
    if not held_out:
        raise ValueError("no test-split problems to evaluate on: raise eval_fraction or add a test file")
    forbidden = {p.key for p in problems}
    suites: list[tuple[str, Problem, str | None, str | None]] = [(IN_DISTRIBUTION, p, None, None) for p in held_out]
    for index, problem in enumerate(held_out):
        twin = _first_applicable_twin(problem, index, perturbations, rng, max_operand, forbidden)
        if twin is not None:
            forbidden.add(twin[1].key)
            suites.append((PERTURBED, twin[1], problem.problem_id, twin[0]))
    if any(p.template is not None for p in held_out):
        suites += [(DOMAIN_SHIFT, p, None, None) for p in domain_shift_problems(suite_size, seed, max_operand)]
    for name, extra in (extra_suites or {}).items():
        if name in SUITES:
            raise ValueError(f"extra suite name '{name}' collides with a built-in suite {SUITES}")
        suites += [(name, p, None, None) for p in extra]
    types, systems, tolerances = answer_types or {}, system_prompts or {}, rel_tols or {}
    rows = [{"suite": suite, "problem_id": p.problem_id, "key": p.key, "question": p.question,
             "solution": p.solution, "answer": p.answer, "original_problem_id": original,
             "perturbation": kind, "answer_type": types.get(suite, "number"),
             "system_prompt": systems.get(suite) or None, "rel_tol": tolerances.get(suite)}
            for suite, p, original, kind in suites]
    return rows


def _first_applicable_twin(problem: Problem, index: int, kinds: tuple[str, ...], rng: random.Random,
                           max_operand: int, forbidden: set[str]) -> tuple[str, Problem] | None:
    for offset in range(len(kinds)):
        kind = kinds[(index + offset) % len(kinds)]
        try:
            twin = perturbation_for(problem, kind, rng, max_operand, forbidden)
        except ValueError:  # e.g. a one-sentence question has no facts to reorder
            continue
        if twin is not None and twin.key not in forbidden:
            return kind, twin
    return None


CONTAMINATION_COLUMNS = ("problem_id", "question", "source", "source_line", "method", "eval_suite",
                         "eval_problem_id", "evidence")


@dataclass(frozen=True)
class Decontaminated:
    clean: list[Problem]  # the training problems every training dataset is built from
    report: list[dict]  # one row per removed problem: which eval item it matched, how, and the evidence


def decontaminate(problems: list[Problem], eval_rows: list[dict], ngram: int) -> Decontaminated:
    """The training split minus anything that overlaps an eval item (same key, same normalized
    question, or a shared ``ngram``-word sequence, which catches near-copies and partial copies)."""
    training = train_problems(problems)
    by_key = {r["key"]: r for r in eval_rows}
    found = {p.problem_id: ("key", by_key[p.key], p.key) for p in training if p.key in by_key}
    _eval_overlaps({p.problem_id: p.question for p in training}, eval_rows, ngram, found)
    report = [{"problem_id": p.problem_id, "question": p.question, "source": p.source, "source_line": p.source_line,
               "method": found[p.problem_id][0], "eval_suite": found[p.problem_id][1]["suite"],
               "eval_problem_id": found[p.problem_id][1]["problem_id"], "evidence": found[p.problem_id][2]}
              for p in training if p.problem_id in found]
    return Decontaminated([p for p in training if p.problem_id not in found], report)


def _eval_overlaps(texts: dict[str, str], eval_rows: list[dict], ngram: int,
                   found: dict[str, tuple[str, dict, str]]) -> None:
    """Add to ``found`` (id -> (method, eval item, evidence)) every text not in it yet that repeats an eval
    question (normalized) or shares an ``ngram``-word sequence with one."""
    by_question = {normalize_question(r["question"]): r for r in eval_rows}
    for item_id, text in texts.items():
        if item_id not in found and (item := by_question.get(normalize_question(text))) is not None:
            found[item_id] = ("question", item, text)
    eval_by_id = {f"{r['suite']}/{r['problem_id']}": r for r in eval_rows}
    for match in find_contamination([(i, text) for i, text in texts.items() if i not in found],
                                    [(item_id, r["question"]) for item_id, r in eval_by_id.items()], n=ngram):
        found.setdefault(match.train_id, ("ngram", eval_by_id[match.eval_id], match.ngram))


def assert_disjoint(eval_rows: list[dict], training: list[Problem]) -> None:
    """No eval item may share a problem key or a normalized question with any training problem."""
    train_keys = {p.key for p in training}
    train_questions = {normalize_question(p.question) for p in training}
    leaked = [r for r in eval_rows
              if r["key"] in train_keys or normalize_question(r["question"]) in train_questions]
    if leaked:
        sample = ", ".join(f"{r['suite']}/{r['problem_id']}" for r in leaked[:5])
        raise ContaminationError(f"{len(leaked)} eval items also appear in training data: {sample}")


@dataclass(frozen=True)
class Disjointness:
    """The verdict of the blocking check on a training split: ``problem`` is None when it passes."""

    problem: str | None
    overlaps: list  # n-gram matches (decontamination.Match), empty when a key or question leaked
    error: str | None = None  # assert_disjoint's message when a key or question leaked


def check_disjoint(training: list[Problem], eval_rows: list[dict], ngram: int) -> Disjointness:
    """No shared key, question or word n-gram between ``training`` and the eval items, and training left."""
    try:
        assert_disjoint(eval_rows, training)
    except ContaminationError as error:
        return Disjointness(str(error), [], str(error))
    overlaps = find_contamination([(p.problem_id, p.question) for p in training],
                                  [(f"{r['suite']}/{r['problem_id']}", r["question"]) for r in eval_rows], n=ngram)
    if not training:
        return Disjointness("no training problem is left: the source has no usable training split", overlaps)
    if overlaps:
        return Disjointness(f"{len(overlaps)} training problems share a {ngram}-gram with an eval item", overlaps)
    return Disjointness(None, overlaps)


USER_CONTAMINATION_COLUMNS = ("dataset", "problem_id", "source", "source_row", "prompt", "method", "eval_suite",
                              "eval_problem_id", "evidence")


def decontaminate_rows(dataset: str, rows: list[dict], eval_rows: list[dict],
                       ngram: int) -> tuple[list[dict], list[dict]]:
    """A user's training rows minus those whose prompt (every user turn) repeats an eval question or
    shares an ``ngram``-word sequence with one; (clean rows, one report row per removal)."""
    from pipelines.data.formats import prompt_messages

    questions = {normalize_question(r["question"]): r for r in eval_rows}
    found = {r["problem_id"]: ("question", questions[q], r["prompt"]) for r in rows  # the last user turn alone
             if (q := normalize_question(r["prompt"])) in questions}
    _eval_overlaps({r["problem_id"]: " ".join(m["content"] for m in prompt_messages(r) if m["role"] == "user")
                    for r in rows}, eval_rows, ngram, found)
    report = []
    for r in rows:
        if r["problem_id"] in found:
            method, item, evidence = found[r["problem_id"]]
            report.append({"dataset": dataset, "problem_id": r["problem_id"], "source": r["source"],
                           "source_row": r["source_row"], "prompt": r["prompt"], "method": method,
                           "eval_suite": item["suite"], "eval_problem_id": item["problem_id"], "evidence": evidence})
    return [r for r in rows if r["problem_id"] not in found], report


SFT_COLUMNS = ("problem_id", "source", "source_row", "prompt", "messages", "completion", "answer")
PREFERENCE_COLUMNS = ("problem_id", "source", "source_row", "prompt", "messages", "chosen", "rejected", "answer",
                      "rejected_answer")
MIX_MODES = ("auto", "include", "exclude")


def mix_rows(problem_rows: list[dict], user_rows: list[dict], problems: str, columns: tuple[str, ...],
             problems_source: str = TRAINING_PROBLEMS) -> list[dict]:
    """A dataset's rows: the user's own rows, and those built from the training problems when
    ``problems`` is ``include``, or ``auto`` and the user brought no rows of this kind (so dropping
    conversations into the raw folder trains on them, not on them mixed with the generator's arithmetic)."""
    if problems not in MIX_MODES:
        raise ValueError(f"problems: '{problems}', expected one of {MIX_MODES}")
    keep_problems = problems == "include" or (problems == "auto" and not user_rows)
    mixed = [{"source": problems_source, **r} for r in problem_rows] if keep_problems else []
    return [{c: r.get(c) for c in columns} for r in mixed + user_rows]
