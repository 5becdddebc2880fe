"""Records from a user's data source, one at a time, each with where it came from.

A source is a file (JSONL, JSON, parquet, CSV), a folder of them, a ``save_to_disk`` directory, or a
Hugging Face hub id that is already in the local cache (the lineage is offline). Structured formats
are read by HF ``datasets`` in streaming mode, so a large file never sits whole in memory. JSONL is
read line by line here instead: ``datasets``' JSON builder fails the whole file on one malformed line
or one row of another type, and a user's export must lose that line to quarantine, not the file.

Every file is hashed (JSONL: the bytes as they are read) and must keep its size, mtime and inode
while it is read, else :class:`RawFileChanged`; the audit records each file's SHA-256, and a hub
dataset its id and the cached revision it resolved to.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.data.ingest import (DEFAULT_MAX_LINE_BYTES, RAW_PREVIEW_CHARS, UTF8_BOM, Digest, RawFileChanged,
                                   check_unchanged, read_lines)

FILE_FORMATS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
FORMATS = ("auto", *dict.fromkeys(FILE_FORMATS.values()), "disk", "hub")
_SPLIT_WORDS = ("train", "test", "validation", "valid", "eval", "dev")


class SourceNotFound(FileNotFoundError):
    """A configured source is neither a readable path nor a dataset in the local hub cache."""


@dataclass(frozen=True)
class Record:
    """One record, or why it could not be read (``problem`` = (kind, reason)); ``number`` is 1-based;
    ``text``: the JSON it was parsed from, for a JSONL line (``conversations.detect_kind`` reads it)."""

    file: str
    number: int
    value: dict | None
    problem: tuple[str, str] | None
    preview: str
    text: str | None = None


@dataclass(frozen=True)
class SourceFile:
    """What the audit credits for one file: its hash, size and how many records it gave."""

    path: str
    sha256: str
    bytes: int
    records: int


@dataclass
class SourceRead:
    """The files one source resolved to, filled in as they are read."""

    source: str
    revision: str | None = None  # a hub dataset's cached commit
    files: list[SourceFile] = field(default_factory=list)

    def audit(self) -> list[dict]:
        return [{"path": f.path, "sha256": f.sha256, "bytes": f.bytes, "records": f.records,
                 **({"dataset": self.source, "revision": self.revision} if self.revision else {})}
                for f in self.files]


def resolve(source: str, fmt: str = "auto", split: str = "train") -> tuple[list[tuple[Path, str]], str | None]:
    """The (file, format) pairs ``source`` stands for, and a hub revision when it is a cached hub id."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format '{fmt}', expected one of {FORMATS}")
    path = Path(source)
    if fmt == "hub" or (fmt == "auto" and not path.exists() and _looks_like_hub_id(source)):
        snapshot = _cached_hub_snapshot(source)
        return _folder_files(snapshot, "auto", split), snapshot.name
    if not path.exists():
        raise SourceNotFound(f"training data source {source}: no such file or directory")
    if path.is_dir():
        if fmt == "disk" or (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return [(path, "disk")], None
        return _folder_files(path, fmt, split), None
    return [(path, fmt if fmt != "auto" else _format_of(path))], None


def read_source(source: str, fmt: str = "auto", split: str = "train", *, read: SourceRead | None = None,
                max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                expected_sha256: dict[str, str] | None = None) -> Iterator[Record]:
    """Every record of ``source``; ``read`` collects its files for the audit as they are finished."""
    files, revision = resolve(source, fmt, split)
    if read is not None:
        read.revision = revision
    for path, file_format in files:
        yield from read_file(path, file_format, split, read=read, max_line_bytes=max_line_bytes,
                             expected_sha256=(expected_sha256 or {}).get(str(path)))


def file_format(path: Path, fmt: str) -> str:
    """The format a file is read as: a .json file of one object per line is JSON Lines."""
    return "jsonl" if fmt == "json" and _first_byte(path) != b"[" else fmt


def read_file(path: Path, fmt: str, split: str = "train", *, read: SourceRead | None = None,
              max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, expected_sha256: str | None = None) -> Iterator[Record]:
    fmt = file_format(path, fmt)
    if fmt == "jsonl":
        for number, raw, too_long in jsonl_lines(path, read=read, max_line_bytes=max_line_bytes,
                                                 expected_sha256=expected_sha256):
            yield jsonl_record(str(path), number, raw, too_long, max_line_bytes)
        return
    sha256, size, before = _hash(path)
    if expected_sha256 is not None and sha256 != expected_sha256:
        raise RawFileChanged(f"{path} changed after the folder snapshot (sha256 {expected_sha256} then, "
                             f"{sha256} now); the step fails so it can be retried on a stable file")
    count = 0
    for count, value in enumerate(_hf_records(path, fmt, split), start=1):
        yield Record(str(path), count, value, None, json.dumps(value, default=str)[:RAW_PREVIEW_CHARS])
    if _identity(path) != before:
        raise RawFileChanged(f"{path} changed while it was read; the step fails so it can be retried")
    if read is not None:
        read.files.append(SourceFile(str(path), sha256, size, count))


def jsonl_lines(path: Path, *, read: SourceRead | None = None, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                expected_sha256: str | None = None) -> Iterator[tuple[int, bytes, int | None]]:
    """(line number, bytes, length when over ``max_line_bytes``) of every line, hashed as it is read; at
    the end the file must be unchanged and is credited to ``read``. Lines go to :func:`jsonl_record`,
    here or in a worker process."""
    digest, count = Digest(), 0
    with path.open("rb") as handle:
        before = os.fstat(handle.fileno())
        for count, (raw, too_long) in enumerate(read_lines(handle, digest, max_line_bytes), start=1):
            if count == 1 and raw.startswith(UTF8_BOM):
                raw = raw[len(UTF8_BOM):]
            yield count, raw, too_long
    sha256 = digest.sha256.hexdigest()
    check_unchanged(path, before, digest, sha256, expected_sha256)
    if read is not None:
        read.files.append(SourceFile(str(path), sha256, digest.bytes, count))


def first_record(path: Path) -> dict | None:
    """The first readable record of a file (for telling a chat file from a problems file), or None."""
    for record in read_file(path, _format_of(path)):
        if record.value is not None:
            return record.value
        if record.number >= 20:  # a file whose first lines are all broken is left to quarantine
            return None
    return None


def jsonl_record(file: str, number: int, raw: bytes, too_long: int | None, max_line_bytes: int) -> Record:
    preview = raw[:RAW_PREVIEW_CHARS].decode("utf-8", errors="replace")
    if too_long is not None:
        return Record(file, number, None, ("too_long", f"line is {too_long} bytes, over the {max_line_bytes}-byte "
                                                       f"limit"), preview)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return Record(file, number, None, ("invalid_utf8", f"invalid UTF-8 at byte {error.start}"), preview)
    if not text.strip():
        return Record(file, number, None, ("blank", "blank line"), preview)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return Record(file, number, None, ("not_json", f"not JSON: {error.msg} at column {error.colno}"), preview)
    if not isinstance(value, dict):
        return Record(file, number, None, ("not_object", f"not a JSON object but {type(value).__name__}"), preview)
    return Record(file, number, value, None, preview, text)


def _hf_records(path: Path, fmt: str, split: str) -> Iterator[dict]:
    import datasets

    datasets.disable_progress_bars()
    if fmt == "disk":
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"{path}: no split '{split}' in the saved dataset (it has {sorted(loaded)})")
            loaded = loaded[split]
        yield from loaded
        return
    rows = datasets.load_dataset(fmt, data_files=[str(path)], split="train", streaming=True)
    if fmt != "csv":
        yield from rows
        return
    for row in rows:  # a CSV cell is text: "1" must stay the answer "1", not become the int pandas infers
        yield {k: v if v is None or isinstance(v, str) else str(v) for k, v in row.items()}


def _hash(path: Path) -> tuple[str, int, tuple]:
    """(sha256, bytes, identity) of a file, or of every file of a ``save_to_disk`` directory."""
    digest = Digest()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.sha256.hexdigest(), digest.bytes, _identity(path)


def _identity(path: Path) -> tuple:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns, f.stat().st_ino) for f in files)


def _first_byte(path: Path) -> bytes:
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip(UTF8_BOM).lstrip()
    return head[:1]


def _format_of(path: Path) -> str:
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown file type '{path.suffix}'; expected one of {sorted(FILE_FORMATS)} "
                         f"(or set format)")
    return fmt


def _folder_files(folder: Path, fmt: str, split: str) -> list[tuple[Path, str]]:
    """Data files under ``folder`` for ``split``: named after it, or all when none names a split."""
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in FILE_FORMATS
                   and not p.name.startswith("."))
    named = [p for p in found if any(word in p.relative_to(folder).as_posix().lower() for word in _SPLIT_WORDS)]
    chosen = [p for p in named if split.lower() in p.relative_to(folder).as_posix().lower()] if named else found
    if not chosen:
        raise SourceNotFound(f"{folder}: no data file for split '{split}' (files: "
                             f"{[p.relative_to(folder).as_posix() for p in found][:10]})")
    return [(p, fmt if fmt != "auto" else _format_of(p)) for p in chosen]


def _looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "~"))


def _cached_hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", local_files_only=True))
    except LocalEntryNotFoundError as error:
        raise SourceNotFound(f"training data source {repo_id}: not a local path and not in the local Hugging Face "
                             f"cache (the lineage is offline): download it once with `huggingface-cli download "
                             f"--repo-type dataset {repo_id}` or give a local path") from error
