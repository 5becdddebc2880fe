"""The user's own training data: every record of every source kept as a row or quarantined with a reason.

Sources are the configured ones plus the chat / reasoning / preference files dropped into the raw-data
folder (a file there is told apart from a GSM8K-style problems file by its first record's fields,
``conversations.detect_kind``). Kept rows stream to a parquet file in batches, so a source far larger
than memory is ingested in bounded memory; ``kept + quarantined == records read`` per source, and a
record identical to an earlier one (same kind, prompt and answer) is quarantined as a duplicate of it.
A large JSONL file's lines become rows in worker processes (``row_stream``), with the same outcome.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.data.conversations import KINDS, Rejected, detect_kind
from pipelines.data.ingest import DEFAULT_MAX_LINE_BYTES
from pipelines.data.records import FORMATS, SourceRead, first_record
from pipelines.data.row_stream import Workers, row_schema, source_chunks
from pipelines.lineage import content_fingerprint

CODE_VERSION = "user-data-v1"  # bump when the same records would give other rows
QUARANTINE_COLUMNS = ("file", "line", "kind", "reason", "raw")
BATCH_ROWS = 20_000
# The parquet file is scratch, read once into DuckDB: compressing it, or dictionary-encoding its unique
# texts, only cost time (writing 1.2 KB rows: 6.4 µs a row with snappy, 1.2 without; benchmarks/p8_ingest.py).
_PARQUET_OPTIONS = {"compression": "none", "use_dictionary": ["kind", "source"]}


@dataclass(frozen=True)
class TrainingSource:
    """One source: a path or cached hub id, the dataset it feeds (None: per record, by its fields)."""

    path: str
    kind: str | None = None
    format: str = "auto"
    split: str = "train"
    columns: dict[str, str] = field(default_factory=dict)
    max_rows: int | None = None  # mixing: keep at most this many rows of this source (first ones read)

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"source {self.path}: unknown kind '{self.kind}', expected one of {KINDS}")
        if self.format not in FORMATS:
            raise ValueError(f"source {self.path}: unknown format '{self.format}', expected one of {FORMATS}")


@dataclass
class SourceOutcome:
    """What became of one source's records (for the metadata, the audit and the blocking check)."""

    source: str
    read: SourceRead
    records: int = 0
    kept: Counter = field(default_factory=Counter)
    quarantined: Counter = field(default_factory=Counter)
    beyond_max_rows: int = 0  # records after max_rows, not read into rows (counted, not silently dropped)

    def summary(self) -> dict:
        return {"source": self.source, "records": self.records, "kept": dict(self.kept),
                "quarantined": dict(self.quarantined), "beyond_max_rows": self.beyond_max_rows}


@dataclass
class IngestedTrainingData:
    rows_file: Path  # parquet, conversations.ROW_COLUMNS
    quarantined: list[dict]
    outcomes: list[SourceOutcome]
    version: str

    @property
    def kept(self) -> Counter:
        return sum((o.kept for o in self.outcomes), Counter())

    @property
    def records(self) -> int:
        return sum(o.records for o in self.outcomes)

    def audit(self) -> list[dict]:
        return [entry for o in self.outcomes for entry in o.read.audit()]


def chat_files(paths: list[str]) -> list[str]:
    """The raw-folder files that hold training records (not GSM8K-style problems): by first record."""
    return [p for p in paths if Path(p).suffix.lower() != ".jsonl" or detect_kind(first_record(Path(p)) or {})]


def ingest_training_data(sources: list[TrainingSource], rows_file: Path, *,
                         max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                         expected_sha256: dict[str, str] | None = None) -> IngestedTrainingData:
    """Read every source into ``rows_file`` (parquet) and a quarantine list; see the module docstring."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = row_schema()
    rows_file.parent.mkdir(parents=True, exist_ok=True)
    seen = _FirstSeen()
    quarantined: list[dict] = []
    outcomes: list[SourceOutcome] = []
    batches, batched = [], 0
    with pq.ParquetWriter(rows_file, schema, **_PARQUET_OPTIONS) as writer, Workers() as workers:
        for source in sources:
            outcome = SourceOutcome(source.path, SourceRead(source.path))
            outcomes.append(outcome)
            beyond = _cap(outcome, source.max_rows)
            for chunk in source_chunks(source.path, source.format, source.split, source.kind, source.columns,
                                       read=outcome.read, workers=workers, beyond=beyond,
                                       max_line_bytes=max_line_bytes, expected_sha256=expected_sha256):
                kept = []  # per row of the chunk's batch
                for number, result, preview in zip(chunk.numbers, chunk.outcomes, chunk.previews):
                    outcome.records += 1
                    if beyond():
                        outcome.beyond_max_rows += 1
                        if isinstance(result, tuple):
                            kept.append(False)
                        continue
                    if isinstance(result, Exception):
                        raise result
                    if isinstance(result, tuple):  # a row: kept unless identical to an earlier one
                        row_kind, problem_id = result
                        first = seen.duplicate_of(problem_id, chunk.file, number)
                        kept.append(first is None)
                        if first is None:
                            outcome.kept[row_kind] += 1
                            continue
                        result = Rejected("duplicate", f"duplicate of {first}")
                    outcome.quarantined[result.kind] += 1
                    quarantined.append({"file": chunk.file, "line": number, "kind": result.kind,
                                        "reason": result.reason, "raw": preview})
                if kept:
                    batches.append(chunk.rows if all(kept) else chunk.rows.filter(pa.array(kept)))
                    batched += sum(kept)
                if batched >= BATCH_ROWS:
                    writer.write_table(pa.Table.from_batches(batches, schema))
                    batches, batched = [], 0
        writer.write_table(pa.Table.from_batches(batches, schema))
    version = content_fingerprint({"code": CODE_VERSION, "sources": [
        {"source": vars(s), "files": o.read.audit()} for s, o in zip(sources, outcomes)]})
    return IngestedTrainingData(rows_file, quarantined, outcomes, version)


def _cap(outcome: SourceOutcome, max_rows: int | None):
    """Whether the source's row cap is reached: later records are counted, not read into rows."""
    if max_rows is None:
        return lambda: False
    return lambda: sum(outcome.kept.values()) >= max_rows


class _FirstSeen:
    """Where each row id was first read: file index and line as one int (~30 bytes, where ``file:line``
    text would take ~100 per kept row); with the quarantine, the ingest's only per-row state."""

    LINE_BITS = 40

    def __init__(self) -> None:
        self._first: dict[str, int] = {}
        self._files: dict[str, int] = {}
        self._names: list[str] = []

    def duplicate_of(self, problem_id: str, file: str, number: int) -> str | None:
        """``file:line`` of the earlier read of ``problem_id``; None when this is its first (or the same) read."""
        index = self._files.get(file)
        if index is None:
            index = self._files[file] = len(self._names)
            self._names.append(file)
        where = index << self.LINE_BITS | number
        first = self._first.setdefault(problem_id, where)
        return None if first == where else f"{self._names[first >> self.LINE_BITS]}:{first & ((1 << self.LINE_BITS) - 1)}"


def rejection_problem(outcomes: list[SourceOutcome], limit: float) -> str | None:
    """Why this read must not be trained on (a source that gave no rows, too much quarantined); None if fine."""
    empty = [o.source for o in outcomes if not sum(o.kept.values())]
    if empty:
        return f"source(s) with no usable row: {', '.join(empty)}"
    read = sum(o.records - o.beyond_max_rows for o in outcomes)
    quarantined = sum(sum(o.quarantined.values()) for o in outcomes)
    if read and quarantined / read > limit:
        return f"{quarantined} of {read} records quarantined ({quarantined / read:.1%}), over the {limit:.1%} limit"
    return None
