"""The user's own training data: every record of every source kept as a row or quarantined with a reason.

Sources are the configured ones plus the chat / reasoning / preference files dropped into the raw-data
folder (a file there is told apart from a GSM8K-style problems file by its first record's fields,
``conversations.detect_kind``). Kept rows stream to a parquet file in batches, so a source far larger
than memory is ingested in bounded memory; ``kept + quarantined == records read`` per source, and a
record identical to an earlier one (same kind, prompt and answer) is quarantined as a duplicate of it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.data.conversations import KINDS, ROW_COLUMNS, Rejected, detect_kind, to_row
from pipelines.data.ingest import DEFAULT_MAX_LINE_BYTES
from pipelines.data.records import FORMATS, Record, SourceRead, first_record, read_source
from pipelines.lineage import content_fingerprint

CODE_VERSION = "user-data-v1"  # bump when the same records would give other rows
QUARANTINE_COLUMNS = ("file", "line", "kind", "reason", "raw")
BATCH_ROWS = 20_000


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
    rows_file: Path  # parquet, ROW_COLUMNS
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

    schema = pa.schema([(name, pa.int64() if name == "source_row" else pa.string()) for name in ROW_COLUMNS])
    rows_file.parent.mkdir(parents=True, exist_ok=True)
    seen: dict[str, str] = {}
    quarantined: list[dict] = []
    outcomes: list[SourceOutcome] = []
    batch: list[dict] = []
    with pq.ParquetWriter(rows_file, schema) as writer:
        for source in sources:
            outcome = SourceOutcome(source.path, SourceRead(source.path))
            outcomes.append(outcome)
            for record in read_source(source.path, source.format, source.split, read=outcome.read,
                                      max_line_bytes=max_line_bytes, expected_sha256=expected_sha256):
                outcome.records += 1
                if source.max_rows is not None and sum(outcome.kept.values()) >= source.max_rows:
                    outcome.beyond_max_rows += 1
                    continue
                row = _row_of(record, source, seen)
                if isinstance(row, Rejected):
                    outcome.quarantined[row.kind] += 1
                    quarantined.append({"file": record.file, "line": record.number, "kind": row.kind,
                                        "reason": row.reason, "raw": record.preview})
                    continue
                outcome.kept[row["kind"]] += 1
                batch.append(row)
                if len(batch) >= BATCH_ROWS:
                    writer.write_table(pa.Table.from_pylist(batch, schema))
                    batch = []
        writer.write_table(pa.Table.from_pylist(batch, schema))
    version = content_fingerprint({"code": CODE_VERSION, "sources": [
        {"source": vars(s), "files": o.read.audit()} for s, o in zip(sources, outcomes)]})
    return IngestedTrainingData(rows_file, quarantined, outcomes, version)


def _row_of(record: Record, source: TrainingSource, seen: dict[str, str]) -> dict | Rejected:
    if record.problem is not None:
        return Rejected(*record.problem)
    kind = source.kind or detect_kind(record.value, source.columns)
    if kind is None:
        return Rejected("unknown_format", f"no field of a known format: expected 'messages', 'conversations', "
                                          f"'prompt'/'completion', 'instruction'/'output' or 'chosen'/'rejected' "
                                          f"(fields: {sorted(record.value)[:8]})")
    row = to_row(record.value, kind, record.file, record.number, source.columns)
    if isinstance(row, Rejected):
        return row
    where = f"{record.file}:{record.number}"
    first = seen.setdefault(row["problem_id"], where)
    if first != where:
        return Rejected("duplicate", f"duplicate of {first}")
    return row


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
