"""The lineage's tables in one DuckDB file, safe to use from parallel Dagster steps.

DuckDB allows one writing process per file. Each operation opens a short-lived connection and, when
another process holds the file lock, waits and retries (bounded by ``lock_timeout_s``) instead of
failing the step.
"""

from __future__ import annotations

import random
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


class DuckDBStore(dg.ConfigurableResource):
    """DuckDB file holding raw data, datasets, quarantine and per-sample eval outputs."""

    path: str = Field(description="DuckDB database file; created on first write.")
    lock_timeout_s: float = Field(default=120.0, description="How long to wait for another writer.")

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
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
            yield connection
        finally:
            connection.close()

    def replace_table(self, table: str, rows: Sequence[dict], columns: Sequence[str] | None = None) -> int:
        """Atomically replace ``table`` with ``rows``; ``columns`` gives the schema when rows are empty."""
        frame = pd.DataFrame(list(rows), columns=list(columns) if columns else None)
        if frame.empty and frame.columns.empty:
            raise ValueError(f"cannot create table '{table}' from no rows without columns")
        if frame.empty:
            frame = frame.astype("string")
        with self.connect() as connection:
            connection.register("incoming", frame)
            connection.execute(f'CREATE OR REPLACE TABLE "{table}" AS SELECT * FROM incoming')
        return len(frame)

    def replace_rows(self, table: str, rows: Sequence[dict], where_column: str, where_value: str) -> int:
        """Replace the slice of ``table`` where ``where_column = where_value`` (e.g. one eval variant)."""
        frame = pd.DataFrame(list(rows))
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

    def query(self, sql: str, parameters: Sequence | None = None) -> list[dict]:
        with self.connect() as connection:
            cursor = connection.execute(sql, parameters or [])
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    def rows(self, table: str) -> list[dict]:
        return self.query(f'SELECT * FROM "{table}"')

    def count(self, table: str) -> int:
        return int(self.query(f'SELECT count(*) AS n FROM "{table}"')[0]["n"])

    def tables(self) -> set[str]:
        return {r["name"] for r in self.query("SELECT table_name AS name FROM information_schema.tables")}
