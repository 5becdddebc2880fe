"""Grading and metrics over stored generations: re-grading never regenerates.

For each (variant, suite, few-shot setting, grader): pass@1, unbiased pass@k (k = samples per item)
and its whole curve, maj@k over the grader's normalized answers (equivalent answers vote together),
and token/latency costs. For CoT-decoded base models, pass@1 is the accuracy of the
confidence-selected branch, pass@k is "any of the K branches", and greedy_pass_at_1 is plain greedy
decoding (branch 0), so the report shows what CoT decoding changed.
"""

from __future__ import annotations

import json
from collections import defaultdict

from pipelines.data.datasets import IN_DISTRIBUTION
from pipelines.evaluation.graders import grade_all
from pipelines.evaluation.metrics import majority_verdict, pass_at_k

DEFAULT_GRADER = "exact"


def grade_generations(generations: list[dict], workers: int,
                      tolerances: dict[tuple[str, str], float] | None = None) -> list[dict]:
    """One row per (sample, grader). ``tolerances``: (suite, problem_id) -> relative tolerance of ``exact``
    for the items of number suites that set ``rel_tol`` (``graders.item_tolerances(suite_rows)``)."""
    if tolerances:
        items = [(row["output"], row["gold"], tolerances.get((row["suite"], row["problem_id"])))
                 for row in generations]
    else:
        items = [(row["output"], row["gold"]) for row in generations]
    grades = grade_all(items, workers=workers)
    return [{"sample_id": row["sample_id"], "variant": row["variant"], "suite": row["suite"], "grader": grader,
             "extracted": extracted, "correct": correct}
            for grader, results in grades.items() for row, (extracted, correct) in zip(generations, results)]


def _unset(value) -> bool:
    """None, or NaN (a missing boolean read through pandas)."""
    return value is None or value != value


def is_headline(row: dict) -> bool:
    """Whether a generation or score row is of its variant's configured few-shot setting (the main tables'),
    not one evaluated beside it for the zero- vs few-shot comparison; rows stored before that flag are."""
    return _unset(row.get("headline")) or bool(row["headline"])


def is_primary(row: dict) -> bool:
    """Whether a score row is its suite's primary grader (``mark_primary``); rows scored before that flag:
    the default grader."""
    return row["grader"] == DEFAULT_GRADER if _unset(row.get("primary")) else bool(row["primary"])


def shots_of(generation: dict) -> int:
    return json.loads(generation["decoding"]).get("few_shot", 0)


def score(generations: list[dict], graded: list[dict]) -> list[dict]:
    """One row per (variant, suite, few-shot setting, grader)."""
    verdicts = {(g["sample_id"], g["grader"]): g for g in graded}
    graders = sorted({g["grader"] for g in graded})
    groups: dict[tuple[str, str, int], list[dict]] = defaultdict(list)
    for row in generations:
        groups[(row["variant"], row["suite"], shots_of(row))].append(row)
    scores = []
    for (variant, suite, shots), rows in sorted(groups.items()):
        per_item: dict[str, list[dict]] = defaultdict(list)
        for row in rows:
            per_item[row["problem_id"]].append(row)
        n = min(len(samples) for samples in per_item.values())
        method = json.loads(rows[0]["decoding"])["method"]
        for grader in graders:
            first, at_k, majority, curve, greedy = [], [], [], [0.0] * n, []
            for samples in per_item.values():
                samples = sorted(samples, key=lambda r: r["sample_index"])[:n]
                correct = [bool(verdicts[(s["sample_id"], grader)]["correct"]) for s in samples]
                c = sum(correct)
                first.append(item_pass_at_1(samples, correct, method))
                if method == "cot":
                    greedy.append(float(correct[0]))  # branch 0 = top-1 first token, then greedy = greedy decoding
                at_k.append(pass_at_k(n, c, n))
                curve = [total + pass_at_k(n, c, k) for total, k in zip(curve, range(1, n + 1))]
                answers = [verdicts[(s["sample_id"], grader)]["extracted"] for s in samples]
                majority.append(float(majority_verdict(answers, correct)))
            items = len(per_item)
            scores.append({
                "variant": variant, "suite": suite, "grader": grader, "decoding": method, "few_shot": shots,
                "headline": is_headline(rows[0]),
                "items": items, "k": n,
                "model_version": rows[0].get("model_version"),
                "pass_at_1": sum(first) / items, "pass_at_k": sum(at_k) / items, "maj_at_k": sum(majority) / items,
                "greedy_pass_at_1": sum(greedy) / items if greedy else None,
                "pass_at_k_curve": json.dumps([round(v / items, 4) for v in curve]),
                "mean_output_tokens": sum(r["output_tokens"] for r in rows) / len(rows),
                "mean_thinking_tokens": sum(r["thinking_tokens"] for r in rows) / len(rows),
                "mean_answer_tokens": sum(r["answer_tokens"] for r in rows) / len(rows),
                "samples_per_second": len(rows) / max(1e-9, sum(r["seconds"] for r in rows)),
            })
    return scores


def item_pass_at_1(samples: list[dict], correct: list[bool], method: str) -> float:
    """One item's pass@1: the confidence-selected branch for CoT decoding, else the mean over samples."""
    if method == "cot":
        return float(next(ok for ok, sample in zip(correct, samples) if sample["selected"]))
    return sum(correct) / len(correct)


def perturbation_drops(generations: list[dict], graded: list[dict], suite_rows: list[dict],
                       grader: str = DEFAULT_GRADER) -> list[dict]:
    """Paired accuracy drop per (variant, perturbation kind): each twin against its own original.

    Pairing removes item difficulty from the comparison: the drop is what the rewording alone cost.
    """
    verdicts = {g["sample_id"]: bool(g["correct"]) for g in graded if g["grader"] == grader}
    twins = {(r["suite"], r["problem_id"]): r for r in suite_rows if r.get("perturbation")}
    per_item: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for row in filter(is_headline, generations):  # each variant's configured few-shot setting
        per_item[(row["variant"], row["suite"], row["problem_id"])].append(row)
    accuracy = {key: item_pass_at_1(samples, [verdicts[s["sample_id"]] for s in samples],
                                    json.loads(samples[0]["decoding"])["method"])
                for key, samples in per_item.items()}
    pairs: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for (variant, suite, problem_id), perturbed in accuracy.items():
        twin = twins.get((suite, problem_id))
        original = accuracy.get((variant, IN_DISTRIBUTION, twin["original_problem_id"])) if twin else None
        if original is not None:
            pairs[(variant, twin["perturbation"])].append((original, perturbed))
    return [{"variant": variant, "perturbation": kind, "grader": grader, "pairs": len(values),
             "original_pass_at_1": sum(o for o, _ in values) / len(values),
             "perturbed_pass_at_1": sum(p for _, p in values) / len(values),
             "drop": sum(o - p for o, p in values) / len(values)}
            for (variant, kind), values in sorted(pairs.items())]


def mark_primary(scores: list[dict], answer_types: dict[str, str]) -> list[dict]:
    """Flag each (variant, suite) row of the suite's primary grader: math-verify for a ``math`` suite
    (LaTeX answers), ``exact`` otherwise; the report's main tables read the primary rows."""
    from pipelines.data.suites import PRIMARY_GRADER

    return [{**row, "primary": row["grader"] == PRIMARY_GRADER.get(answer_types.get(row["suite"], "number"),
                                                                    DEFAULT_GRADER)} for row in scores]
