"""GSM8K-format JSONL ingestion that keeps or quarantines every line, never drops one.

A line is kept only if it is a JSON object with non-empty string ``question`` and ``answer`` fields and
the answer ends in ``#### N`` with a numeric N. Everything else goes to quarantine with the file, the
1-based line number and a reason, so ``kept + quarantined == lines read`` holds by construction.

Each file is hashed as it is read, so the audit credits exactly the bytes ingested, and a file that
changes while it is read (an in-place ``cp``, a ``mv`` over it) fails the read instead of passing a torn
or foreign copy. Lines are read with a bounded ``readline``: an over-long line costs ~``max_line_bytes``
of memory, not its own size.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipelines.data.problems import Problem, TEST_SPLIT, TRAIN_SPLIT, normalize_question, stable_id

CALCULATOR_ANNOTATION = re.compile(r"<<[^>]*>>")
FINAL_ANSWER = re.compile(r"####\s*(.*?)\s*$", re.S)
_NUMBER = re.compile(r"^-?[\d,]*\.?\d+$")
RAW_PREVIEW_CHARS = 500
# A GSM8K line is ~1 KB; a line this long is a broken export (or an attack), not a problem to train on.
DEFAULT_MAX_LINE_BYTES = 1 << 20
_SKIP_CHUNK_BYTES = 1 << 16  # the rest of an over-long line is read (and hashed) in pieces this big
UTF8_BOM = b"\xef\xbb\xbf"  # editors and Windows exports put it before the first line


class RawFileChanged(RuntimeError):
    """The bytes read are not the file that was versioned: fail the step, a retry reads a stable file."""


@dataclass(frozen=True)
class QuarantinedLine:
    file: str
    line: int
    kind: str
    reason: str
    raw: str

    def as_row(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FileRead:
    """One read of one file: the sha256 and size of exactly the bytes ingested (what the audit credits,
    never a later re-hash of the path), and what became of its lines (``lines == 0``: an empty file)."""

    path: str
    sha256: str
    bytes: int
    lines: int
    kept: int
    quarantined: int


@dataclass
class IngestResult:
    problems: list[Problem] = field(default_factory=list)
    quarantined: list[QuarantinedLine] = field(default_factory=list)
    lines_read: int = 0
    files: list[FileRead] = field(default_factory=list)  # in read order (held-out files first)

    def quarantine_counts(self) -> dict[str, int]:
        return dict(Counter(q.kind for q in self.quarantined))

    @property
    def empty_files(self) -> list[str]:
        """Files that held no line at all: reading them is not evidence of any data."""
        return [f.path for f in self.files if f.lines == 0]


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
    match = FINAL_ANSWER.search(answer_text)
    if "####" not in answer_text or match is None:
        return "no_final_answer", f"field '{answer_field}' has no '#### <final answer>'"
    final = match.group(1).replace("$", "").rstrip(".").strip()
    if not _NUMBER.match(final):
        return "non_numeric_answer", f"final answer '{final[:40]}' after '####' is not a number"
    solution = CALCULATOR_ANNOTATION.sub("", answer_text[: match.start()]).strip()
    return record[question_field].strip(), " ".join(solution.split()), final.replace(",", "")


def quarantine_rate(kept: int, quarantined: int) -> float:
    """Share of the lines read that went to quarantine (0 when nothing was read)."""
    total = kept + quarantined
    return quarantined / total if total else 0.0


def quarantine_problem(lines_read: int, kept: int, quarantined: int, limit: float) -> str | None:
    """Why a read must not be trained on (an empty source, nothing kept, too much quarantined); None if fine."""
    rate = quarantine_rate(kept, quarantined)
    if lines_read == 0:
        return "the raw source is empty (0 lines read): nothing to train on"
    if kept == 0:
        return f"all {quarantined} raw lines were quarantined"
    if rate > limit:
        return f"{quarantined} of {kept + quarantined} raw lines quarantined ({rate:.1%}), over the {limit:.1%} limit"
    return None


class Digest:
    """sha256 and byte count of everything read from one file."""

    def __init__(self) -> None:
        self.sha256, self.bytes = hashlib.sha256(), 0

    def update(self, chunk: bytes) -> bytes:
        self.sha256.update(chunk)
        self.bytes += len(chunk)
        return chunk


def read_lines(handle, digest: Digest, max_line_bytes: int) -> Iterator[tuple[bytes, int | None]]:
    """(line without its newline, None), or (its first bytes, its length) for a line over the limit,
    whose rest is skipped in chunks so it never sits in memory whole."""
    limit = max_line_bytes + 2  # room for the line's '\r\n'
    while chunk := digest.update(handle.readline(limit)):
        if chunk.endswith(b"\n") or len(chunk) < limit:  # a whole line (the last may lack its newline)
            line = chunk.rstrip(b"\r\n")
            yield (line, None) if len(line) <= max_line_bytes else (line[:RAW_PREVIEW_CHARS], len(line))
            continue
        head, length, tail = chunk[:RAW_PREVIEW_CHARS], len(chunk), chunk[-2:]
        del chunk
        while not tail.endswith(b"\n") and (piece := digest.update(handle.readline(_SKIP_CHUNK_BYTES))):
            length, tail = length + len(piece), (tail + piece)[-2:]
        yield head, length - (2 if tail == b"\r\n" else 1 if tail.endswith(b"\n") else 0)


def _identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    return stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev


def check_unchanged(path: Path, before: os.stat_result, digest: Digest, sha256: str,
                     expected_sha256: str | None) -> None:
    """Raise when what was read is not one stable version of ``path`` (or not the snapshot's version)."""
    retry = "the step fails so it can be retried on a stable file"
    if expected_sha256 is not None and sha256 != expected_sha256:
        raise RawFileChanged(f"{path} changed while it was read (sha256 before {expected_sha256} in the folder "
                             f"snapshot, bytes read {sha256} ({digest.bytes} bytes)); {retry}")
    try:
        after = _identity(os.stat(path))
    except FileNotFoundError:
        after = None
    if after != _identity(before) or digest.bytes != before.st_size:
        raise RawFileChanged(f"{path} changed while it was read ((size, mtime_ns, inode, device) before "
                             f"{_identity(before)}, after {after or 'removed'}; {digest.bytes} bytes read); {retry}")


def ingest_jsonl(paths: list[Path], *, question_field: str = "question", answer_field: str = "answer",
                 answer_format: str = "gsm8k", max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                 expected_sha256: Mapping[str, str] | None = None) -> IngestResult:
    """Read GSM8K-format files; duplicates of an already-kept question are quarantined too.

    Held-out (test) files are read first, so a question that is in both a test and a training file is
    kept as an eval item and its training copy is quarantined as a duplicate of it. ``expected_sha256``
    (``str(path)`` -> sha256, e.g. from a folder snapshot) must match the bytes read; every file must
    also keep its size, mtime and inode while it is read, else :class:`RawFileChanged`.
    """
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"unknown answer_format '{answer_format}', expected one of {ANSWER_FORMATS}")
    result = IngestResult()
    seen: dict[str, tuple[str, int]] = {}
    for path in sorted(paths, key=lambda p: split_from_filename(p) != TEST_SPLIT):
        if not path.is_file():
            raise FileNotFoundError(f"raw JSONL file not found: {path}")
        split = split_from_filename(path)
        digest, lines, kept, quarantined = Digest(), 0, len(result.problems), len(result.quarantined)
        with path.open("rb") as handle:
            before = os.fstat(handle.fileno())
            for line_number, (raw, too_long) in enumerate(read_lines(handle, digest, max_line_bytes), start=1):
                result.lines_read += 1
                lines = line_number
                if line_number == 1 and raw.startswith(UTF8_BOM):
                    raw = raw[len(UTF8_BOM):]
                if too_long is not None:
                    parsed = ("too_long", f"line is {too_long} bytes, over the {max_line_bytes}-byte limit")
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
        sha256 = digest.sha256.hexdigest()
        check_unchanged(path, before, digest, sha256, (expected_sha256 or {}).get(str(path)))
        result.files.append(FileRead(str(path), sha256, digest.bytes, lines, len(result.problems) - kept,
                                     len(result.quarantined) - quarantined))
    return result
