"""Self-improvement rounds (expert iteration / rejection-sampling fine-tuning, as in STaR): the reasoning
model samples training prompts, a verifier keeps what is right, and the kept traces train the next round.

The verifier checks two things: the final answer (against the gold answer with the project's grader; a
prompt without one is labelled by self-consistency: the majority answer of its samples, kept only when it
has at least ``agreement`` of the votes), and every arithmetic step ``a op b = c`` written in the trace. The
step check matters: on the tiny profile about half of the right answers came from wrong steps
("4 + 3 = 8. 8 + 7 = 14"), and training on those lowered pass@1 (0.31 → 0.28) where the step-checked samples
raised it (0.31 → 0.39, 2026-12-02). Every sample is stored with a status saying why it was kept or not (nothing is
dropped silently); right vs wrong samples of one prompt become preference pairs. Prompts are split once,
by a seeded shuffle, into a validation slice no round ever samples (the early-stopping signal) and the
sampling pool, of which each round takes its own block.
"""

from __future__ import annotations

import ast
import operator
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pipelines.data.formats import prompt_messages
from pipelines.evaluation.backends import HF, load_backend
from pipelines.evaluation.decoding import sample_id, split_thinking
from pipelines.evaluation.grading import extract_final_answer, is_correct
from pipelines.training.checkpoint_record import EVALUATION, recorded_chat_options

# A sample's status in ``self_improvement_samples``: only "kept" rows train the next round.
KEPT, WRONG, WRONG_STEP, NO_ANSWER, NO_CONSENSUS, DUPLICATE, CONTAMINATED = (
    "kept", "wrong", "wrong_step", "no_answer", "no_consensus", "duplicate", "contaminated")
# Bump when what the verifier accepts changes: it is in the round assets' code version and every round's record.
VERIFIER_VERSION = "verifier-v1"  # v1: final answer (grading.is_correct, or the majority label) + arithmetic steps
_NUMBER = r"-?\d+(?:\.\d+)?"
# "a op b (op c ...) = d", the longest such expression: chained steps are evaluated whole, with precedence
ARITHMETIC_STEP = re.compile(rf"((?:{_NUMBER}\s*[-+*/×]\s*)+{_NUMBER})\s*=\s*({_NUMBER})")
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
VERIFIER, MAJORITY = "verifier", "majority"  # how a sample's label was decided
# A round checkpoint's lineage.json: validation pass@1 of its weights and of the checkpoint it started from (under
# EVALUATION), and, for a round that did not train, why and whose weights it carries.
VALIDATION, START_VALIDATION, STOPPED = "validation_pass_at_1", "start_validation_pass_at_1", "stopped_early"
SAMPLE_COLUMNS = ("round", "sample_id", "problem_id", "sample_index", "prompt", "messages", "completion", "gold",
                  "label", "label_source", "predicted", "status", "sampled_checkpoint", "output_tokens",
                  "thinking_tokens")
PAIR_COLUMNS = ("round", "problem_id", "source", "source_row", "prompt", "messages", "chosen", "rejected", "answer",
                "rejected_answer", "chosen_sample_id", "rejected_sample_id")


@dataclass(frozen=True)
class RoundSettings:
    """How one round samples and labels; the defaults come from the profile (``pipelines/profiles.py``)."""

    prompts: int  # sampled per round, a new block of the pool each round
    samples_per_prompt: int
    temperature: float
    max_new_tokens: int
    batch_size: int
    seed: int
    agreement: float = 0.6  # self-consistency: share of votes the majority answer needs on unlabelled prompts
    backend: str = HF


def split_prompts(rows: list[dict], validation: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(validation rows, sampling pool): one seeded shuffle, the same for every round. The validation slice is
    at most half the prompts, so a small dataset still leaves prompts to sample."""
    ordered = sorted(rows, key=lambda r: r["problem_id"])
    random.Random(seed).shuffle(ordered)
    size = min(validation, len(ordered) // 2)
    return ordered[:size], ordered[size:]


def round_prompts(pool: list[dict], round_index: int, size: int) -> list[dict]:
    """Round ``round_index``'s (1-based) block of the pool, wrapping around once the pool is used up."""
    if not pool:
        return []
    start = ((round_index - 1) * size) % len(pool)
    return [pool[(start + i) % len(pool)] for i in range(min(size, len(pool)))]


def generate(model_dir: Path, rows: list[dict], samples: int, temperature: float, max_new_tokens: int,
             batch_size: int, seed: int, backend: str = HF) -> list[list[tuple[str, int, int]]]:
    """Per row, ``samples`` outputs as (text, output tokens, thinking tokens), asked as the checkpoint was
    trained (its chat options); temperature 0 is greedy."""
    engine = load_backend(backend, model_dir)
    chat = recorded_chat_options(model_dir)
    prompts = [chat.generation_prompt(engine.tokenizer, prompt_messages(row)) for row in rows]
    runs = engine.generate_runs(prompts, max_new_tokens, batch_size,
                                [(temperature, seed + index) for index in range(samples)], ())
    return [[(run.generations[i].text, run.generations[i].output_tokens,
              split_thinking(run.generations[i].text, engine.tokenizer)[0]) for run in runs]
            for i in range(len(rows))]


def _value(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_value(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_value(node.left), _value(node.right))
    raise ValueError("not arithmetic")


def steps_consistent(text: str) -> bool:
    """Every ``a op b = c`` step written in the text computes (a trace may state no step at all)."""
    for expression, stated in ARITHMETIC_STEP.findall(text):
        try:
            value = _value(ast.parse(expression.replace("×", "*"), mode="eval").body)
        except (ValueError, ZeroDivisionError, SyntaxError):
            return False
        if abs(value - float(stated)) > 1e-6 * max(1.0, abs(float(stated))):
            return False
    return True


def label_samples(round_index: int, rows: list[dict], outputs: list[list[tuple[str, int, int]]],
                  sampled_checkpoint: str, agreement: float) -> list[dict]:
    """One record per sample with its label and status (kept / wrong / wrong_step / no_answer / no_consensus /
    duplicate)."""
    records = []
    for row, samples in zip(rows, outputs):
        predicted = [extract_final_answer(text) for text, _, _ in samples]
        gold = row.get("answer")
        if gold not in (None, ""):
            label, source = gold, VERIFIER
        else:
            votes = Counter(p for p in predicted if p is not None)
            top, count = votes.most_common(1)[0] if votes else (None, 0)
            label, source = (top, MAJORITY) if count >= agreement * len(samples) and top is not None else (None, MAJORITY)
        seen: set[str] = set()
        for index, ((text, tokens, thinking), answer) in enumerate(zip(samples, predicted)):
            if answer is None:
                status = NO_ANSWER
            elif label is None:
                status = NO_CONSENSUS
            elif not is_correct(answer, label):
                status = WRONG
            elif not steps_consistent(text):
                status = WRONG_STEP
            elif text.strip() in seen:
                status = DUPLICATE
            else:
                status = KEPT
                seen.add(text.strip())
            records.append({
                "round": round_index, "problem_id": row["problem_id"], "sample_index": index,
                "sample_id": sample_id(sampled_checkpoint, row["problem_id"], str(round_index), str(index)),
                "prompt": row["prompt"], "messages": row.get("messages"), "completion": text, "gold": gold,
                "label": label, "label_source": source, "predicted": answer, "status": status,
                "sampled_checkpoint": sampled_checkpoint, "output_tokens": tokens, "thinking_tokens": thinking})
    return records


def sample_round(round_index: int, model_dir: Path, rows: list[dict], settings: RoundSettings, eval_rows: list[dict],
                 ngram: int, dataset: str) -> tuple[list[dict], set[str]]:
    """Round ``round_index``'s labelled samples of ``model_dir`` on ``rows``, kept ones of prompts overlapping an
    eval item marked contaminated; and those prompts' ids."""
    from pipelines.data.datasets import decontaminate_rows

    outputs = generate(model_dir, rows, settings.samples_per_prompt, settings.temperature, settings.max_new_tokens,
                       settings.batch_size, settings.seed + round_index, settings.backend)
    records = label_samples(round_index, rows, outputs, model_dir.name, settings.agreement)
    _, report = decontaminate_rows(dataset, rows, eval_rows, ngram)
    contaminated = {r["problem_id"] for r in report}
    return mark_contaminated(records, contaminated), contaminated


def mark_contaminated(records: list[dict], contaminated_problem_ids: set[str]) -> list[dict]:
    """Kept samples of a prompt that overlaps an eval item are not trained on (decontamination per round)."""
    return [{**r, "status": CONTAMINATED} if r["status"] == KEPT and r["problem_id"] in contaminated_problem_ids
            else r for r in records]


def preference_pairs(records: list[dict]) -> list[dict]:
    """A kept sample against a wrong one of the same prompt: the model's own mistake is the rejected side."""
    by_problem: dict[str, dict[str, list[dict]]] = {}
    for r in records:
        if r["status"] in (KEPT, WRONG):
            by_problem.setdefault(r["problem_id"], {KEPT: [], WRONG: []})[r["status"]].append(r)
    pairs = []
    for problem_id, found in by_problem.items():
        if found[KEPT] and found[WRONG]:
            chosen, rejected = found[KEPT][0], found[WRONG][0]
            pairs.append({"round": chosen["round"], "problem_id": problem_id, "source": "self_improvement",
                          "source_row": None, "prompt": chosen["prompt"], "messages": chosen["messages"],
                          "chosen": chosen["completion"], "rejected": rejected["completion"], "answer": chosen["label"],
                          "rejected_answer": rejected["predicted"] or "", "chosen_sample_id": chosen["sample_id"],
                          "rejected_sample_id": rejected["sample_id"]})
    return pairs


def training_rows(records: list[dict]) -> list[dict]:
    """The kept samples as think-SFT rows (prompt → the model's own verified completion)."""
    return [{"problem_id": r["problem_id"], "sample_id": r["sample_id"], "source": "self_improvement",
             "source_row": None, "prompt": r["prompt"], "messages": r["messages"], "completion": r["completion"],
             "answer": r["label"]} for r in records if r["status"] == KEPT]


def round_statistics(records: list[dict]) -> dict:
    """What the report shows per round: the verifier's yield and the length trend of what was sampled."""
    sampled = len(records)
    statuses = Counter(r["status"] for r in records)
    mean = lambda key: sum(r[key] for r in records) / sampled if sampled else 0.0  # noqa: E731
    return {"sampled": sampled, "kept": statuses[KEPT], "yield": statuses[KEPT] / sampled if sampled else 0.0,
            "prompts": len({r["problem_id"] for r in records}),
            "prompts_with_kept": len({r["problem_id"] for r in records if r["status"] == KEPT}),
            "mean_output_tokens": mean("output_tokens"), "mean_thinking_tokens": mean("thinking_tokens"),
            **{f"status_{status}": count for status, count in sorted(statuses.items())}}


def validation_pass_at_1(model_dir: Path, rows: list[dict], samples: int, temperature: float, max_new_tokens: int,
                         batch_size: int, seed: int, backend: str = HF) -> float | None:
    """pass@1 on the held-out validation prompts (those with a gold answer), sampled as the reasoning variant is
    evaluated: the stopping rule's signal (greedy pass@1 barely moved while sampled pass@1 rose: the rounds
    sharpen the sampling distribution). None without a gold answer to verify against."""
    graded = [r for r in rows if r.get("answer") not in (None, "")]
    if not graded:
        return None
    outputs = generate(model_dir, graded, samples, temperature, max_new_tokens, batch_size, seed, backend)
    right = sum(is_correct(extract_final_answer(text), row["answer"])
                for row, row_outputs in zip(graded, outputs) for text, _, _ in row_outputs)
    return right / (len(graded) * samples)


def stop_reason(previous: dict, previous_name: str, margin: float) -> str | None:
    """Why round k does not sample, from round k−1's record: it stopped, or gained less than ``margin``."""
    if previous.get(STOPPED):
        return f"{previous_name} stopped: {previous[STOPPED]['reason']}"
    evaluation = previous.get(EVALUATION, {})
    if evaluation.get(VALIDATION) is None or evaluation.get(START_VALIDATION) is None:
        return None  # no gold answer to validate on: nothing to judge the round by, so the rounds go on
    gain = evaluation[VALIDATION] - evaluation[START_VALIDATION]
    if gain < margin:
        return (f"{previous_name} gained {gain:+.3f} validation pass@1 ({evaluation[START_VALIDATION]:.3f} → "
                f"{evaluation[VALIDATION]:.3f}), less than min_improvement {margin}")
    return None


def best_weights(previous: dict) -> dict | None:
    """What a stopped round carries, from round k−1's record: None for round k−1's own weights (it improved, or
    it carries the best already), else the checkpoint it started from ({name, version}), which was better."""
    evaluation = previous.get(EVALUATION, {})
    if previous.get(STOPPED) or evaluation.get(VALIDATION, 0.0) >= evaluation.get(START_VALIDATION, 0.0):
        return None
    return previous["start_checkpoint"]
