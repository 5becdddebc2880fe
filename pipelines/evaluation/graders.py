"""Graders over stored generations, each a plain function ``(output, gold) -> (answer, correct)``.

``answer`` is the grader's *normalized* answer: two samples with the same one are equivalent for that
grader, which is what maj@k votes over.

- ``strict``: lm-evaluation-harness GSM8K ``strict-match``, exactly: the first ``#### (\\-?[0-9\\.\\,]+)``.
- ``flexible``: lm-evaluation-harness GSM8K ``flexible-extract``, exactly: the last match of
  ``(-?[$0-9.,]{2,})|(-?[0-9]+)`` anywhere in the output.
  Both compare as lm-eval's ``exact_match`` does for GSM8K: strings, after deleting ``,``, ``$``,
  ``.*#### `` and one trailing ``.``, lower-cased; so "18.00" is not "18", "The answer is 3/4." reads
  4, "−3" reads 3 and ``$\\boxed{82}$.`` reads nothing. That is lm-eval's behaviour, kept so the
  numbers compare with published ones; the next two graders read the final-answer region instead.
- ``exact``: the project's default: the final-answer region (``grading.final_answer_region``), its
  number as an exact decimal value (fractions and Unicode minus included); with an item's relative
  tolerance (a ``number`` suite's ``rel_tol``), any value within ``rel_tol * |gold|`` (see
  ``within_tolerance``). The other graders ignore it: lm-eval's compare strings, math-verify its own way.
- ``math_verify``: HF math-verify on that same region, run in worker processes (its timeouts use
  ``signal.alarm``, which only works in a process's main thread).
"""

from __future__ import annotations

import multiprocessing
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from decimal import Decimal
from functools import lru_cache

from pipelines.evaluation.grading import BOXED, extract_final_answer, final_answer_region, normalize_number

STRICT_PATTERN = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE_PATTERN = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
# lm-eval gsm8k.yaml, metric exact_match: regexes_to_ignore (deleted in this order), ignore_case: true.
LM_EVAL_IGNORE = tuple(re.compile(pattern) for pattern in (",", r"\$", r"(?s).*#### ", r"\.$"))

Grade = tuple[str | None, bool]
# (output, gold), or (output, gold, rel_tol) for an item of a suite with a relative tolerance (None: none)
Item = tuple[str, str] | tuple[str, str, float | None]

DESCRIPTIONS = {
    "strict": "lm-eval GSM8K strict-match (first number after '#### ')",
    "flexible": "lm-eval GSM8K flexible-extract (last number anywhere)",
    "exact": "final-answer region (after ####, A:, 'answer is', the last \\boxed{} or </think>), exact value",
    "math_verify": "HF math-verify on the final-answer region",
}


def lm_eval_normalize(text: str) -> str:
    for pattern in LM_EVAL_IGNORE:
        text = pattern.sub("", text)
    return text.lower()


@lru_cache(maxsize=65536)
def _gold(gold: str) -> tuple[str, str | None]:
    """The gold answer as lm-eval and as ``exact`` see it; cached: k samples × graders share one gold."""
    return lm_eval_normalize(gold), normalize_number(gold)


def _lm_eval_grade(extracted: str | None, gold: str) -> Grade:
    """No match is lm-eval's "[invalid]", which equals no gold answer; an empty string reads nothing."""
    if extracted is None:
        return None, False
    value = lm_eval_normalize(extracted.strip())
    return value or None, value == _gold(gold)[0]


def strict(output: str, gold: str) -> Grade:
    match = STRICT_PATTERN.search(output)
    return _lm_eval_grade(match.group(1) if match else None, gold)


def flexible(output: str, gold: str) -> Grade:
    matches = FLEXIBLE_PATTERN.findall(output)
    return _lm_eval_grade(next(group for group in matches[-1] if group) if matches else None, gold)


def exact(output: str, gold: str, rel_tol: float | None = None) -> Grade:
    value = extract_final_answer(output)
    correct = value is not None and value == _gold(gold)[1]
    if not correct and rel_tol is not None and value is not None:  # the common path pays one test
        correct = within_tolerance(value, _gold(gold)[1], rel_tol)
    return value, correct


def within_tolerance(value: str, gold: str | None, rel_tol: float) -> bool:
    """``|value - gold| <= rel_tol * |gold|``, on exact decimals (normalized numbers). Relative only: a
    gold of 0 has no scale, so it takes an exact 0 (as ``math.isclose`` without ``abs_tol``)."""
    if gold is None:
        return False
    expected = Decimal(gold)
    return abs(Decimal(value) - expected) <= Decimal(repr(rel_tol)) * abs(expected)


def item_tolerances(suite_rows: Iterable[dict]) -> dict[tuple[str, str], float]:
    """(suite, problem_id) -> ``rel_tol`` of the ``eval_suites`` rows that set one (rows stored before the
    column have none), for ``scoring.grade_generations(..., tolerances=...)``."""
    return {(r["suite"], r["problem_id"]): float(r["rel_tol"]) for r in suite_rows
            if r.get("rel_tol") is not None and r["rel_tol"] == r["rel_tol"]}  # NaN: a NULL read through pandas


def math_verify_view(output: str) -> str:
    """What math-verify reads: the final-answer region, with an anchor it knows ("Answer:") so that it
    takes the first value there, as ``exact`` does, not one from a parenthetical after it."""
    region, kind = final_answer_region(output)
    if kind == "boxed":
        return f"{BOXED}{region}}}"
    return f"Answer: {region}" if kind == "marker" else region


def canonical_answer(expr) -> str:
    """math-verify's parse as a vote: numbers as exact decimals ("18.00", "18" and 36/2 are one
    answer), anything else as sympy prints it."""
    import sympy

    if isinstance(expr, sympy.Rational):
        return normalize_number(f"{expr.p}/{expr.q}") or str(expr)
    if getattr(expr, "is_number", False):
        value = expr.evalf()
        if isinstance(value, sympy.Float):
            return normalize_number(str(value)) or str(expr)
    return str(expr)


def _math_verify_one(item: tuple[str, str]) -> Grade:
    from math_verify import parse, verify

    output, gold = item
    try:
        predicted = parse(math_verify_view(output))
        correct = bool(predicted) and verify(parse(f"${gold}$"), predicted)  # gold first: it is asymmetric
        return (canonical_answer(predicted[0]) if predicted else None), bool(correct)
    except Exception:  # noqa: BLE001 - math-verify raises on unparsable input: that is "wrong", not a crash
        return None, False


def math_verify_batch(items: Sequence[tuple[str, str]], workers: int = 2) -> list[Grade]:
    """Grade (output, gold) pairs with math-verify in ``workers`` processes, order preserved.

    math-verify (sympy, the LaTeX parser) is imported here, before the workers fork from this process,
    so they start with it loaded instead of each importing it (~1 s) on its first item; small chunks
    keep the workers equally busy to the end.
    """
    import math_verify  # noqa: F401

    workers = max(1, workers)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(_math_verify_one, items, chunksize=max(1, min(64, len(items) // (workers * 16)))))


GRADERS: dict[str, Callable[[str, str], Grade]] = {"strict": strict, "flexible": flexible, "exact": exact}


def grade_all(items: Sequence[Item], workers: int = 2) -> dict[str, list[Grade]]:
    """Every grader on the same stored generations (math-verify batched in worker processes). An item's
    third element, a relative tolerance, widens ``exact`` only; without any, the pairs go as they are."""
    tolerances = None
    if any(len(item) > 2 for item in items):
        tolerances = [item[2] if len(item) > 2 else None for item in items]
        items = [(item[0], item[1]) for item in items]
    results: dict[str, list[Grade]] = {}
    for name, grader in GRADERS.items():
        if name == "exact" and tolerances is not None:
            results[name] = [exact(output, gold, tol) for (output, gold), tol in zip(items, tolerances)]
        else:
            results[name] = [grader(output, gold) for output, gold in items]
    results["math_verify"] = math_verify_batch(items, workers)
    return results
