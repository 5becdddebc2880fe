"""Final-answer extraction and exact numeric grading, as plain functions over stored generations.

The answer is read from the *final-answer region*, not from anywhere in the output, because reasoning
is full of numbers that are not the answer. The region is what follows the last ``</think>`` (else the
whole output), narrowed to what follows the last answer marker there: ``####``, ``A:``, "answer is" /
"answer:" (any case), or the content of the last ``\\boxed{…}``. After a marker the answer is the first
number that is not an operand ("12 (she started with 15)" is 12, "3 + 4 = 7" is 7); with no marker it
is the last number. Numbers may be fractions (``3/4``, ``\\frac{3}{4}``) or use a Unicode minus.
Comparison is exact on decimal values, ignoring ``,``, ``$`` and a trailing ``.``.
"""

from __future__ import annotations

import re
import string
from decimal import Decimal, DivisionByZero, InvalidOperation

from pipelines.data.formats import FINAL_ANSWER_MARK, THINK_CLOSE

# The pre-region reading, kept for CoT decoding's answer-confidence span (cot_decoding.py): changing
# it would change which branch is selected, i.e. the generations, not just their grades.
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")

UNICODE_MINUS = "\u2212"
BOXED = "\\boxed{"
# Sign only where it cannot be a binary minus ("34-16" is 34 and 16); thousands only in groups of 3.
ANSWER_NUMBER = re.compile(
    r"(?<![0-9A-Za-z_.])-?\$?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:/\d+(?:\.\d+)?)?")
_OPERAND_NEXT = re.compile(r"[ \t]*(?:[-+*/×÷^x][ \t]*\$?\(?\d|=)")
_ANSWER_TAIL = re.compile(r"(?:\*\*)?(?:[ \t]+is\b:?|[ \t]*:)")
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_LATEX_FRAC = re.compile(r"\\[dt]?frac\{\s*(-?[\d.,]+)\s*\}\{\s*([\d.,]+)\s*\}")


def answer_segment(output: str) -> str:
    """The pre-region segment (after ``####`` else ``</think>``), used by CoT decoding only."""
    for marker in (FINAL_ANSWER_MARK, THINK_CLOSE):
        if marker in output:
            return output.rsplit(marker, 1)[1]
    return output


def _last_marker(text: str) -> tuple[int, int, bool]:
    """(start, end, is_boxed) of the last answer marker in ``text``; start -1 when there is none.

    ``str.rfind`` per marker rather than one regex scan: the scan cost more than the whole old grader.
    """
    best = (-1, -1, False)
    start = text.rfind(FINAL_ANSWER_MARK)
    if start >= 0:
        best = (start, start + len(FINAL_ANSWER_MARK), False)
    start = text.rfind(BOXED)
    if start > best[0]:
        best = (start, start + len(BOXED), True)
    end = len(text)
    while (start := text.rfind("A:", 0, end)) > best[0]:
        if not start or not text[start - 1].isalnum():
            best = (start, start + 2, False)
            break
        end = start
    # str.lower can change a non-ASCII text's length ("İ"), which would shift every index after it
    lower, end = text.lower() if text.isascii() else text.translate(_ASCII_LOWER), len(text)
    while (start := lower.rfind("answer", 0, end)) > best[0]:
        tail = _ANSWER_TAIL.match(lower, start + 6)
        if tail and (not start or not lower[start - 1].isalpha()):
            best = (start, tail.end(), False)
            break
        end = start
    return best


def _braced(text: str) -> str:
    """``text`` up to the brace closing the one just opened before it (``\\boxed{\\frac{3}{4}}``)."""
    depth = 1
    for index, char in enumerate(text):
        depth += (char == "{") - (char == "}")
        if not depth:
            return text[:index]
    return text


def final_answer_region(output: str) -> tuple[str, str]:
    """(region, kind): kind is ``"boxed"`` (region = the box's content), ``"marker"`` (the text after
    an answer marker) or ``"none"`` (no marker: everything after ``</think>``, else the output)."""
    close = output.rfind(THINK_CLOSE)
    text = output[close + len(THINK_CLOSE):] if close >= 0 else output
    if UNICODE_MINUS in text:
        text = text.replace(UNICODE_MINUS, "-")
    start, end, boxed = _last_marker(text)
    if start < 0:
        return text, "none"
    return (_braced(text[end:]), "boxed") if boxed else (text[end:], "marker")


def extract_final_answer(output: str) -> str | None:
    """The normalized final answer, or None when the region states no number."""
    region, kind = final_answer_region(output)
    if "frac" in region:
        region = _LATEX_FRAC.sub(r"\1/\2", region)
    if kind == "none":
        numbers = ANSWER_NUMBER.findall(region)
        return normalize_number(numbers[-1]) if numbers else None
    for match in ANSWER_NUMBER.finditer(region):
        if not _OPERAND_NEXT.match(region, match.end()):
            return normalize_number(match.group())
    return None


def normalize_number(text: str) -> str | None:
    """Canonical decimal text ("1,234" → "1234", "3.50" → "3.5", "3/4" → "0.75"), or None."""
    cleaned = text.replace(",", "").replace("$", "").replace(UNICODE_MINUS, "-").strip().rstrip(".")
    try:
        if "/" in cleaned:
            numerator, denominator = cleaned.split("/")
            value = Decimal(numerator) / Decimal(denominator)
        else:
            value = Decimal(cleaned)
    except (InvalidOperation, DivisionByZero, ValueError):
        return None
    if not value.is_finite():
        return None
    return format(value.normalize(), "f") if value != value.to_integral() else str(int(value))


def is_correct(predicted: str | None, gold: str) -> bool:
    return predicted is not None and predicted == normalize_number(gold)
