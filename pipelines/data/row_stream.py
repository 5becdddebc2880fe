"""Every record of a user's source as a lineage row or why not, a large JSONL file's lines converted in workers.

Reading stays in one process: it hashes the bytes as they are read, so the audit credits exactly what
was ingested. Turning a line into a row (UTF-8, JSON, the format's fields, the row's id) costs ~10× the
reading and depends on that line alone, so the lines of a large JSONL file go in chunks to forked
worker processes, which send back Arrow batches (cheap to pass between processes), in file order;
small files and the formats ``datasets`` reads are converted in-process by the same function. What is
kept (row caps, duplicates) is decided by the caller, in order, so the rows, the quarantine and any
error are those of a one-process read.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

from pipelines.data.conversations import ROW_COLUMNS, Rejected, detect_kind, to_row
from pipelines.data.records import Record, SourceRead, file_format, jsonl_lines, jsonl_record, read_file, resolve

PARALLEL_MIN_BYTES = 16 << 20  # below: converted in-process (starting workers costs more than they save)
CHUNK_RECORDS, CHUNK_BYTES = 2_000, 4 << 20
MAX_WORKERS = 4  # the reading process keeps up with about this many
_ROW_VALUES = itemgetter(*ROW_COLUMNS)
_KIND_AND_ID = itemgetter("kind", "problem_id")


def row_schema():
    import pyarrow as pa

    return pa.schema([(name, pa.int64() if name == "source_row" else pa.string()) for name in ROW_COLUMNS])


@dataclass
class Converted:
    """A chunk of one file's records, in order: each one's line number, preview and outcome, which is the
    (kind, problem_id) of its row in ``rows``, a Rejected, the error converting it raised, or None (read
    past the row cap, not converted); ``rows``: the rows as an Arrow batch (``row_schema``)."""

    file: str
    numbers: list[int]
    outcomes: list[tuple[str, str] | Rejected | Exception | None]
    previews: list[str | None]
    rows: object = None  # pa.RecordBatch

    @classmethod
    def of(cls, file: str, records: list[Record], kind: str | None, columns: dict[str, str]) -> Converted:
        outcomes, rows = [], []
        for record in records:
            outcome = _convert(record, kind, columns)
            if isinstance(outcome, dict):
                rows.append(_ROW_VALUES(outcome))
                outcome = _KIND_AND_ID(outcome)
            outcomes.append(outcome)
        return cls(file, [r.number for r in records], outcomes, [r.preview for r in records], _batch(rows))

    @classmethod
    def skipped(cls, file: str, numbers: list[int]) -> Converted:
        return cls(file, numbers, [None] * len(numbers), [None] * len(numbers))


def _convert(record: Record, kind: str | None, columns: dict[str, str]) -> dict | Rejected | Exception:
    if record.problem is not None:
        return Rejected(*record.problem)
    try:
        row_kind = kind or detect_kind(record.value, columns, record.text)
        if row_kind is None:
            return Rejected("unknown_format", f"no field of a known format: expected 'messages', 'conversations', "
                                              f"'prompt'/'completion', 'instruction'/'output' or 'chosen'/'rejected' "
                                              f"(fields: {sorted(record.value)[:8]})")
        return to_row(record.value, row_kind, record.file, record.number, columns)
    except Exception as error:  # noqa: BLE001 - raised by the caller if it reaches this record, as in one process
        return error


def _batch(rows: list[tuple]):
    import pyarrow as pa

    schema = row_schema()
    columns = zip(*rows) if rows else [[]] * len(schema)
    return pa.RecordBatch.from_arrays([pa.array(list(c), f.type) for c, f in zip(columns, schema)], schema=schema)


def convert_lines(file: str, lines: list[tuple[int, bytes, int | None]], kind: str | None, columns: dict[str, str],
                  max_line_bytes: int) -> Converted:
    """A worker's job: one chunk of JSONL lines."""
    with _collector_paused():
        return Converted.of(file, [jsonl_record(file, number, raw, too_long, max_line_bytes)
                                   for number, raw, too_long in lines], kind, columns)


@contextmanager
def _collector_paused():
    """No cyclic garbage collection while a chunk converts: parsed records hold no cycles, and the
    collections their many dicts and lists set off took 10-20% of the conversion (best of 10 rounds)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Workers:
    """Forked converter processes, started when the first large JSONL file needs them (fork: nothing to
    re-import); none where fewer than 2 CPUs are available, as the reader would compete with them."""

    def __init__(self, count: int | None = None):
        available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self.count = min(available, MAX_WORKERS) if count is None else count
        self._pool: ProcessPoolExecutor | None = None

    def pool(self) -> ProcessPoolExecutor | None:
        if self._pool is None and self.count >= 2:
            self._pool = ProcessPoolExecutor(self.count, mp_context=multiprocessing.get_context("fork"),
                                             initializer=gc.freeze)  # the inherited heap: never scanned, not copied
        return self._pool

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def source_chunks(source: str, fmt: str, split: str, kind: str | None, columns: dict[str, str], *,
                  read: SourceRead, workers: Workers, beyond: Callable[[], bool], max_line_bytes: int,
                  expected_sha256: dict[str, str] | None) -> Iterator[Converted]:
    """Every record of ``source`` in order, in chunks; once ``beyond()`` (the row cap reached), chunks
    are not converted. ``read`` collects the files for the audit as they are finished."""
    files, revision = resolve(source, fmt, split)
    read.revision = revision
    for path, file_fmt in files:
        expected, file = (expected_sha256 or {}).get(str(path)), str(path)
        if file_format(path, file_fmt) == "jsonl" and path.stat().st_size >= PARALLEL_MIN_BYTES and workers.pool():
            yield from _converted_in_workers(workers, path, kind, columns, read, max_line_bytes, expected, beyond)
            continue
        records = read_file(path, file_fmt, split, read=read, max_line_bytes=max_line_bytes, expected_sha256=expected)
        for chunk in _chunks(records, lambda record: len(record.preview)):
            if beyond():
                yield Converted.skipped(file, [r.number for r in chunk])
                continue
            with _collector_paused():
                converted = Converted.of(file, chunk, kind, columns)
            yield converted


def _converted_in_workers(workers: Workers, path: Path, kind: str | None, columns: dict[str, str], read: SourceRead,
                          max_line_bytes: int, expected: str | None, beyond: Callable[[], bool]) -> Iterator[Converted]:
    """At most two chunks per worker in flight, so memory stays bounded whatever the file's size. A
    read error (the file changed, say) is raised after the chunks read before it, as in one process."""
    pool, file = workers.pool(), str(path)
    pending: deque[Future] = deque()
    chunks = _chunks(jsonl_lines(path, read=read, max_line_bytes=max_line_bytes, expected_sha256=expected),
                     lambda line: len(line[1]))
    failure = None
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            break
        except Exception as error:  # noqa: BLE001 - re-raised once the records before it are through
            failure = error
            break
        if beyond():
            while pending:
                yield pending.popleft().result()
            yield Converted.skipped(file, [number for number, _, _ in chunk])
            continue
        pending.append(pool.submit(convert_lines, file, chunk, kind, columns, max_line_bytes))
        if len(pending) > 2 * workers.count:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
    if failure is not None:
        raise failure


def _chunks(items: Iterable, size_of: Callable[[object], int]) -> Iterator[list]:
    """Lists of items; when reading fails, the items read before the error first, as in one process."""
    chunk, size = [], 0
    try:
        for item in items:
            chunk.append(item)
            size += size_of(item)
            if len(chunk) >= CHUNK_RECORDS or size >= CHUNK_BYTES:
                yield chunk
                chunk, size = [], 0
    except Exception:
        if chunk:
            yield chunk
        raise
    if chunk:
        yield chunk
