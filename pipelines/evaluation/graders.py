"""Graders over stored generations, each a plain function ``(output, gold) -> (extracted, correct)``.

- ``strict``: lm-evaluation-harness GSM8K strict-match: the number after ``#### ``.
- ``flexible``: lm-evaluation-harness flexible-extract: the last number in the output.
- ``exact``: the project's default (answer after ``####`` / ``</think>``, last number there).
- ``math_verify``: HF math-verify, run in worker processes (its timeouts use ``signal.alarm``, which
  only works in a process's main thread).
All numeric ones ignore ``,``, ``$`` and a trailing ``.`` as lm-eval does.
"""

from __future__ import annotations

import multiprocessing
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

from pipelines.evaluation.grading import extract_final_answer, normalize_number

STRICT_PATTERN = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE_PATTERN = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")

Grade = tuple[str | None, bool]


def _compare(extracted: str | None, gold: str) -> Grade:
    value = normalize_number(extracted) if extracted is not None else None
    return value, value is not None and value == normalize_number(gold)


def strict(output: str, gold: str) -> Grade:
    match = STRICT_PATTERN.search(output)
    return _compare(match.group(1) if match else None, gold)


def flexible(output: str, gold: str) -> Grade:
    matches = FLEXIBLE_PATTERN.findall(output)
    if not matches:
        return None, False
    last = next(group for group in matches[-1] if group)
    return _compare(last, gold)


def exact(output: str, gold: str) -> Grade:
    return _compare(extract_final_answer(output), gold)


def _math_verify_one(item: tuple[str, str]) -> Grade:
    from math_verify import parse, verify

    output, gold = item
    try:
        predicted = parse(output)
        correct = bool(predicted) and verify(parse(f"${gold}$"), predicted)  # gold first: it is asymmetric
    except Exception:  # noqa: BLE001 - math-verify raises on unparsable input: that is "wrong", not a crash
        return None, False
    return (str(predicted[-1]) if predicted else None), bool(correct)


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


def grade_all(items: Sequence[tuple[str, str]], workers: int = 2) -> dict[str, list[Grade]]:
    """Every grader on the same stored generations (math-verify batched in worker processes)."""
    results = {name: [grader(output, gold) for output, gold in items] for name, grader in GRADERS.items()}
    results["math_verify"] = math_verify_batch(items, workers)
    return results
