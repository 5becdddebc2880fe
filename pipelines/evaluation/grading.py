"""Exact numeric answer grading, as plain functions over stored generations.

The final answer is read from the part of the output that states it: after the last ``####`` (base
models continuing the corpus format), else after the last ``</think>`` (reasoning models), else the
whole output; the last number there is the prediction. Comparison is exact on decimal values, ignoring
``,`` and ``$`` and a trailing ``.`` as lm-evaluation-harness does for GSM8K.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from pipelines.data.formats import FINAL_ANSWER_MARK, THINK_CLOSE

_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def answer_segment(output: str) -> str:
    for marker in (FINAL_ANSWER_MARK, THINK_CLOSE):
        if marker in output:
            return output.rsplit(marker, 1)[1]
    return output


def extract_final_answer(output: str) -> str | None:
    numbers = _NUMBER.findall(answer_segment(output))
    return normalize_number(numbers[-1]) if numbers else None


def normalize_number(text: str) -> str | None:
    cleaned = text.replace(",", "").replace("$", "").strip().rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    return format(value.normalize(), "f") if value != value.to_integral() else str(int(value))


def is_correct(predicted: str | None, gold: str) -> bool:
    return predicted is not None and predicted == normalize_number(gold)
