"""GSM8K-format JSONL ingestion that keeps or quarantines every line, never drops one.

A line is kept only if it is a JSON object with non-empty string ``question`` and ``answer`` fields and
the answer ends in ``#### N`` with a numeric N. Everything else goes to quarantine with the file, the
1-based line number and a reason, so ``kept + quarantined == lines read`` holds by construction.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipelines.data.problems import Problem, TEST_SPLIT, TRAIN_SPLIT, normalize_question, stable_id

_CALCULATOR_ANNOTATION = re.compile(r"<<[^>]*>>")
_FINAL_ANSWER = re.compile(r"####\s*(.*?)\s*$", re.S)
_NUMBER = re.compile(r"^-?[\d,]*\.?\d+$")
RAW_PREVIEW_CHARS = 500
# A GSM8K line is ~1 KB; a line this long is a broken export (or an attack), not a problem to train on.
DEFAULT_MAX_LINE_BYTES = 1 << 20


@dataclass(frozen=True)
class QuarantinedLine:
    file: str
    line: int
    kind: str
    reason: str
    raw: str

    def as_row(self) -> dict:
        return asdict(self)


@dataclass
class IngestResult:
    problems: list[Problem] = field(default_factory=list)
    quarantined: list[QuarantinedLine] = field(default_factory=list)
    lines_read: int = 0

    def quarantine_counts(self) -> dict[str, int]:
        return dict(Counter(q.kind for q in self.quarantined))


def split_from_filename(path: Path) -> str:
    """GSM8K ships ``train.jsonl`` / ``test.jsonl``: the file name says which side a problem is on."""
    return TEST_SPLIT if "test" in path.stem.lower() else TRAIN_SPLIT


ANSWER_FORMATS = ("gsm8k", "number")  # gsm8k: worked solution ending in '#### N'; number: the final answer


def _parse_line(raw: bytes, question_field: str, answer_field: str,
                answer_format: str = "gsm8k") -> tuple[str, str, str] | tuple[str, str]:
    """(question, solution, answer), or (kind, reason) when the line cannot be used."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return "invalid_utf8", f"invalid UTF-8 at byte {error.start}"
    if not text.strip():
        return "blank", "blank line"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        return "not_json", f"not JSON: {error.msg} at column {error.colno}"
    if not isinstance(record, dict):
        return "not_object", f"not a JSON object but {type(record).__name__}"
    if answer_format == "number" and isinstance(record.get(answer_field), int | float) \
            and not isinstance(record.get(answer_field), bool):
        record[answer_field] = str(record[answer_field])
    for name in (question_field, answer_field):
        if name not in record:
            return "missing_field", f"missing field '{name}'"
        if not isinstance(record[name], str):
            return "wrong_type", f"field '{name}' is {type(record[name]).__name__}, expected string"
        if not record[name].strip():
            return "empty_field", f"field '{name}' is empty"
    answer_text = record[answer_field]
    if answer_format == "number":
        final = answer_text.replace("$", "").strip().rstrip(".")
        if not _NUMBER.match(final):
            return "non_numeric_answer", f"field '{answer_field}' = '{final[:40]}' is not a number"
        return record[question_field].strip(), "", final.replace(",", "")
    match = _FINAL_ANSWER.search(answer_text)
    if "####" not in answer_text or match is None:
        return "no_final_answer", f"field '{answer_field}' has no '#### <final answer>'"
    final = match.group(1).replace("$", "").rstrip(".").strip()
    if not _NUMBER.match(final):
        return "non_numeric_answer", f"final answer '{final[:40]}' after '####' is not a number"
    solution = _CALCULATOR_ANNOTATION.sub("", answer_text[: match.start()]).strip()
    return record[question_field].strip(), " ".join(solution.split()), final.replace(",", "")


def quarantine_rate(kept: int, quarantined: int) -> float:
    """Share of the lines read that went to quarantine (0 when nothing was read)."""
    total = kept + quarantined
    return quarantined / total if total else 0.0


def ingest_jsonl(paths: list[Path], *, question_field: str = "question", answer_field: str = "answer",
                 answer_format: str = "gsm8k", max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> IngestResult:
    """Read GSM8K-format files; duplicates of an already-kept question are quarantined too.

    Held-out (test) files are read first, so a question that is in both a test and a training file is
    kept as an eval item and its training copy is quarantined as a duplicate of it.
    """
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"unknown answer_format '{answer_format}', expected one of {ANSWER_FORMATS}")
    result = IngestResult()
    seen: dict[str, tuple[str, int]] = {}
    for path in sorted(paths, key=lambda p: split_from_filename(p) != TEST_SPLIT):
        if not path.is_file():
            raise FileNotFoundError(f"raw JSONL file not found: {path}")
        split = split_from_filename(path)
        with path.open("rb") as handle:
            for line_number, raw in enumerate(handle, start=1):
                result.lines_read += 1
                raw = raw.rstrip(b"\r\n")
                if len(raw) > max_line_bytes:
                    parsed = ("too_long", f"line is {len(raw)} bytes, over the {max_line_bytes}-byte limit")
                else:
                    parsed = _parse_line(raw, question_field, answer_field, answer_format)
                preview = raw[:RAW_PREVIEW_CHARS].decode("utf-8", errors="replace")
                if len(parsed) == 2:
                    result.quarantined.append(QuarantinedLine(str(path), line_number, *parsed, preview))
                    continue
                question, solution, answer = parsed
                key = normalize_question(question)
                if key in seen:
                    first_file, first_line = seen[key]
                    result.quarantined.append(QuarantinedLine(
                        str(path), line_number, "duplicate", f"duplicate question of {first_file}:{first_line}",
                        preview))
                    continue
                seen[key] = (str(path), line_number)
                result.problems.append(Problem(
                    problem_id=stable_id(key), key=key, split=split, question=question, solution=solution,
                    answer=answer, source=str(path), source_line=line_number))
    return result
