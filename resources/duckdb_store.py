"""The lineage's tables in one DuckDB file, safe to use from parallel Dagster steps.

DuckDB allows one writing process per file. Each operation opens a short-lived connection and, when
another process holds the file lock, waits and retries (bounded by ``lock_timeout_s``) instead of
failing the step. After an operation the process keeps the database open for ``keep_open_s``, so the
step's next operation does not load the file again (see ``_KeptOpen``).

Only writes create the file. Reading a missing file or table raises :class:`MissingDatabase` /
:class:`MissingTable` naming the file or table and the asset to materialize, rather than DuckDB's
catalog error about an empty database that the read itself would have created.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
from pydantic import Field


class DuckDBLockTimeout(RuntimeError):
    pass


class MissingDatabase(FileNotFoundError):
    """A read of a database file that is not there (deleted, or nothing materialized yet)."""


class MissingTable(LookupError):
    """A read of a table that is not in the database."""


# Tables are named after the assets that write them, except these (tests check the names against the graph).
WRITTEN_BY: dict[str, tuple[str, ...]] = {
    "raw_quarantine": ("raw_problems",), "raw_quarantine_rejected": ("raw_problems",),
    "eval_suite_quarantine": ("eval_suites",), "eval_suite_quarantine_rejected": ("eval_suites",), "contamination_report": ("training_problems",),
    "on_policy_traces": ("preference_dataset",), "eval_generations": ("eval_base", "eval_instruct", "eval_reasoning"),
    "eval_grades": ("eval_scores",), "eval_perturbation_drops": ("eval_scores",),
    "raw_training_quarantine": ("raw_training_data",), "raw_training_quarantine_rejected": ("raw_training_data",),
    "table_versions": ("raw_problems", "raw_training_data", "eval_suites", "training_problems"),
    "training_data_contamination": ("sft_dataset", "think_dataset", "preference_dataset"),
}
TABLE_VERSIONS = "table_versions"  # which version of each check-gated asset is published
_MISSING_TABLE = re.compile(r"Table with name (\S+) does not exist")


def writer_of(table: str) -> str:
    """Which asset writes ``table``, in words."""
    assets = WRITTEN_BY.get(table, (table,))
    return "asset " + (assets[0] if len(assets) == 1 else f"{', '.join(assets[:-1])} or {assets[-1]}")


class _KeptOpen:
    """Per process: one idle connection per database file, closed ``seconds`` after the last operation.

    While any connection to a file is open in a process, DuckDB keeps the database loaded and a new
    connection costs ~0.1 ms. Without one, every operation opens the file, reads its catalog and
    closes it again: ~20 ms, and a step makes about three (an unchanged re-run of the lineage made 77).
    Holding the file a fraction of a second longer makes other processes wait that much longer at most.
    ``os.fork`` (a fork-context process pool, say) first closes them: a child would otherwise inherit a
    copy of the open database and use it without the file lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, tuple[duckdb.DuckDBPyConnection, threading.Timer]] = {}

    def extend(self, path: str, seconds: float) -> None:
        """Called while an operation's own connection is still open, so opening the idle one is cheap."""
        with self._lock:
            connection, timer = self._held.pop(path, (None, None))
            if timer is not None:
                timer.cancel()
            timer = threading.Timer(seconds, self._expire)
            timer.args, timer.daemon = (path, timer), True
            self._held[path] = (connection or duckdb.connect(path), timer)
            timer.start()

    def _expire(self, path: str, timer: threading.Timer) -> None:
        with self._lock:
            if self._held.get(path, (None, None))[1] is timer:  # not extended by a later operation
                self._held.pop(path)[0].close()

    def release(self, path: str) -> None:
        with self._lock:
            connection, timer = self._held.pop(path, (None, None))
            if connection is not None:
                timer.cancel()
                connection.close()

    def release_all(self) -> None:
        for path in list(self._held):
            self.release(path)

    def reset_in_child(self) -> None:
        """Another thread may have taken the lock between ``release_all`` and the fork."""
        self._lock, self._held = threading.Lock(), {}


_kept_open = _KeptOpen()
os.register_at_fork(before=_kept_open.release_all, after_in_child=_kept_open.reset_in_child)


class DuckDBStore(dg.ConfigurableResource):
    """DuckDB file holding raw data, datasets, quarantine and per-sample eval outputs."""

    path: str = Field(description="DuckDB database file; created on first write.")
    lock_timeout_s: float = Field(default=120.0, description="How long to wait for another writer.")
    keep_open_s: float = Field(default=0.25, ge=0, description=(
        "How long a process keeps the file open after an operation, so that its next one skips loading "
        "it (~20 ms each); other processes wait at most this much longer. 0: close at once."))
    memory_limit: str = Field(default="1GB", description=(
        "DuckDB's memory cap in this process (its own default is 80% of RAM, per process). Publishing 1 GiB "
        "of training rows filled 2.1 GiB without it, 1.0 GiB with it, in the same time "
        "(benchmarks/p8_ingest.py); work beyond it spills to disk."))

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for writing (it creates the file); reads go through ``query``."""
        if not Path(self.path).exists():  # deleted: a kept connection would write to the unlinked file
            _kept_open.release(self.path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                connection = duckdb.connect(self.path)
                break
            except duckdb.IOException as error:
                if "lock" not in str(error).lower():
                    raise
                if time.monotonic() > deadline:
                    raise DuckDBLockTimeout(
                        f"{self.path} stayed locked by another process for {self.lock_timeout_s}s") from error
                time.sleep(0.05 + random.random() * 0.2)
        try:
            connection.execute(f"SET memory_limit = '{self.memory_limit}'")  # the whole database instance's
            yield connection
            if self.keep_open_s > 0:
                _kept_open.extend(self.path, self.keep_open_s)
        finally:
            connection.close()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """A step's end: the file is closed now rather than after ``keep_open_s``."""
        self.close_kept_open()

    def close_kept_open(self) -> None:
        _kept_open.release(self.path)

    @staticmethod
    def frame(table: str, rows: Sequence[dict], columns: Sequence[str] | None = None) -> pd.DataFrame:
        """``rows`` as a frame to load into ``table``; ``columns`` gives the schema when rows are empty."""
        frame = pd.DataFrame(list(rows), columns=list(columns) if columns else None)
        if frame.empty and frame.columns.empty:
            raise ValueError(f"cannot create table '{table}' from no rows without columns")
        return frame.astype("string") if frame.empty else frame

    def replace_table(self, table: str, rows: Sequence[dict], columns: Sequence[str] | None = None) -> int:
        """Atomically replace ``table`` with ``rows``; ``columns`` gives the schema when rows are empty."""
        frame = self.frame(table, rows, columns)
        with self.connect() as connection:
            connection.register("incoming", frame)
            connection.execute(f'CREATE OR REPLACE TABLE "{table}" AS SELECT * FROM incoming')
        return len(frame)

    def replace_rows(self, table: str, rows: Sequence[dict], where_column: str, where_value: str,
                     columns: Sequence[str] | None = None) -> int:
        """Replace the slice of ``table`` where ``where_column = where_value`` (e.g. one eval variant);
        ``columns`` gives the schema when rows are empty (the slice is then emptied)."""
        frame = self.frame(table, rows, columns)
        with self.connect() as connection:
            connection.register("incoming", frame)
            connection.execute("BEGIN TRANSACTION")
            connection.execute(f'CREATE TABLE IF NOT EXISTS "{table}" AS SELECT * FROM incoming LIMIT 0')
            existing = {r[0] for r in connection.execute(f'DESCRIBE "{table}"').fetchall()}
            for name, column_type, *_ in connection.execute("DESCRIBE SELECT * FROM incoming").fetchall():
                if name not in existing:  # a newer writer added a column: older slices read NULL
                    connection.execute(f'ALTER TABLE "{table}" ADD COLUMN "{name}" {column_type}')
            connection.execute(f'DELETE FROM "{table}" WHERE "{where_column}" = ?', [where_value])
            connection.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM incoming')
            connection.execute("COMMIT")
        return len(frame)

    def publish(self, asset: str, data_version: str, run_id: str, tables: dict[str, pd.DataFrame | Path]) -> None:
        """Replace ``tables`` and record ``asset``'s published version in ``table_versions``, in one transaction.

        A ``Path`` is an immutable parquet file (named by its version) too large to hold as rows: the name
        becomes a view over it, so publishing a gigabyte of rows costs no copy (copying it into the database
        file took ~20 s per million conversations, mostly compressing strings)."""
        with self.connect() as connection:
            connection.execute("BEGIN TRANSACTION")
            connection.execute(f"""CREATE TABLE IF NOT EXISTS {TABLE_VERSIONS} (asset VARCHAR PRIMARY KEY,
                data_version VARCHAR, dagster_run_id VARCHAR, published_at TIMESTAMP)""")
            kinds = dict(connection.execute("SELECT table_name, table_type FROM information_schema.tables").fetchall())
            for name, frame in tables.items():
                if isinstance(frame, Path):
                    if kinds.get(name) == "BASE TABLE":
                        connection.execute(f'DROP TABLE "{name}"')
                    parquet = str(frame.resolve()).replace("'", "''")
                    connection.execute(f"CREATE OR REPLACE VIEW \"{name}\" AS SELECT * FROM read_parquet('{parquet}')")
                    continue
                if kinds.get(name) == "VIEW":
                    connection.execute(f'DROP VIEW "{name}"')
                connection.register(f"incoming_{name}", frame)
                connection.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM "incoming_{name}"')
            connection.execute(f"INSERT OR REPLACE INTO {TABLE_VERSIONS} VALUES (?, ?, ?, now())",
                               [asset, data_version, run_id])
            connection.execute("COMMIT")

    def published_rows(self, table: str, sql: str | None = None) -> tuple[list[dict], tuple[str, str] | None]:
        """Rows of ``table`` (or of ``sql`` over it) and the (data version, run) ``publish`` recorded for it, from
        one snapshot; no rows when nothing was published."""
        with self.connect() as connection:
            connection.execute("BEGIN TRANSACTION")
            present = {r[0] for r in connection.execute("SELECT table_name FROM information_schema.tables").fetchall()}
            published = connection.execute(
                f"SELECT data_version, dagster_run_id FROM {TABLE_VERSIONS} WHERE asset = ?", [table]).fetchone() \
                if TABLE_VERSIONS in present else None
            cursor = connection.execute(sql or f'SELECT * FROM "{table}"') if published else None
            rows = [dict(zip([c[0] for c in cursor.description], row)) for row in cursor.fetchall()] if cursor else []
            connection.execute("COMMIT")
        return rows, (published[0], published[1]) if published else None

    def query(self, sql: str, parameters: Sequence | None = None, *, table: str | None = None) -> list[dict]:
        """Rows of ``sql``; ``table`` (the table it reads) only sharpens the error when the file is missing."""
        if not Path(self.path).exists():
            _kept_open.release(self.path)
            raise MissingDatabase(self._missing_database(table))
        try:
            with self.connect() as connection:
                cursor = connection.execute(sql, parameters or [])
                names = [column[0] for column in cursor.description]
                return [dict(zip(names, row)) for row in cursor.fetchall()]
        except duckdb.CatalogException as error:
            missing = _MISSING_TABLE.search(str(error))
            if missing is None:
                raise
            name = missing.group(1)
            raise MissingTable(f"table '{name}' is not in {self.path}; it is written by {writer_of(name)}: "
                               f"materialize that first ({str(error).splitlines()[0]})") from error

    def _missing_database(self, table: str | None) -> str:
        what = (f"table '{table}' is written by {writer_of(table)}: materialize that and its upstream"
                if table else "materialize the assets that write it (raw_problems and downstream)")
        return (f"DuckDB file {self.path} does not exist (deleted, or nothing materialized into it yet): "
                f"{what}, e.g. `dagster asset materialize --select '*' -m pipelines.definitions`")

    def rows(self, table: str) -> list[dict]:
        return self.query(f'SELECT * FROM "{table}"', table=table)

    def count(self, table: str) -> int:
        return int(self.query(f'SELECT count(*) AS n FROM "{table}"', table=table)[0]["n"])

    def tables(self) -> set[str]:
        """The tables in the file; none when it does not exist (without creating it)."""
        if not Path(self.path).exists():
            return set()
        return {r["name"] for r in self.query("SELECT table_name AS name FROM information_schema.tables")}
