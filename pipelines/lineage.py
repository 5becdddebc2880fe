"""The lineage audit: which data and code produced an artifact, and what used a raw file.

Every materialization appends one row to the DuckDB ``lineage`` table (asset, data version, the data
versions of its inputs, config hash, code version, git commit, Dagster and MLflow run ids; for the raw
stage also the files and row counts it read) and its input edges to ``lineage_inputs``. Both
directions are recursive queries over those edges, so they answer for every generation ever built,
not just the current one:

    python -m pipelines.lineage back instruct_checkpoint           # checkpoint/report -> raw files, rows
    python -m pipelines.lineage forward var/raw_data/train.jsonl   # raw file -> checkpoints, reports
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import duckdb

LINEAGE_TABLE = "lineage"
INPUTS_TABLE = "lineage_inputs"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
LINEAGE_COLUMNS = ("asset", "data_version", "recorded_at", "dagster_run_id", "mlflow_run_id", "config_hash",
                   "code_version", "git_commit", "sources")


_CHUNK_BYTES = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def content_fingerprint(content) -> str:
    """A short stable hash of any JSON-serialisable content (rows, configs)."""
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def git_commit() -> str:
    """HEAD of the checkout the code runs from, ``+dirty`` with uncommitted changes, or ``unknown``."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def code_version() -> str:
    try:
        return metadata.version("llm-lineage")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class LineageRecord:
    asset: str
    data_version: str
    dagster_run_id: str
    inputs: dict[str, str]  # upstream asset -> the data version this materialization consumed
    mlflow_run_id: str | None = None
    config: dict = field(default_factory=dict)
    sources: list[dict] = field(default_factory=list)  # raw stage: [{path, sha256, rows, quarantined}]

    def row(self) -> dict:
        return {"asset": self.asset, "data_version": self.data_version,
                "recorded_at": datetime.now(timezone.utc).replace(tzinfo=None), "dagster_run_id": self.dagster_run_id,
                "mlflow_run_id": self.mlflow_run_id, "config_hash": content_fingerprint(self.config),
                "code_version": code_version(), "git_commit": git_commit(), "sources": json.dumps(self.sources)}


def ensure_tables(connection: duckdb.DuckDBPyConnection) -> None:
    connection.execute(f"""CREATE TABLE IF NOT EXISTS {LINEAGE_TABLE} (asset VARCHAR, data_version VARCHAR,
        recorded_at TIMESTAMP, dagster_run_id VARCHAR, mlflow_run_id VARCHAR, config_hash VARCHAR,
        code_version VARCHAR, git_commit VARCHAR, sources VARCHAR)""")
    connection.execute(f"""CREATE TABLE IF NOT EXISTS {INPUTS_TABLE} (asset VARCHAR, data_version VARCHAR,
        dagster_run_id VARCHAR, input_asset VARCHAR, input_version VARCHAR)""")


def append(connection: duckdb.DuckDBPyConnection, record: LineageRecord) -> None:
    ensure_tables(connection)
    row = record.row()
    connection.execute(f"INSERT INTO {LINEAGE_TABLE} VALUES ({', '.join('?' * len(LINEAGE_COLUMNS))})",
                       [row[c] for c in LINEAGE_COLUMNS])
    for input_asset, input_version in sorted(record.inputs.items()):
        connection.execute(f"INSERT INTO {INPUTS_TABLE} VALUES (?, ?, ?, ?, ?)",
                           [record.asset, record.data_version, record.dagster_run_id, input_asset, input_version])


def _require_tables(connection: duckdb.DuckDBPyConnection) -> None:
    present = {r[0] for r in connection.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    if not {LINEAGE_TABLE, INPUTS_TABLE} <= present:
        raise LookupError("no lineage recorded yet: materialize some assets first")


def latest_versions(connection: duckdb.DuckDBPyConnection, assets: list[str]) -> dict[str, str]:
    """The newest recorded data version of each asset: what a step consuming them now reads."""
    _require_tables(connection)
    if not assets:
        return {}
    rows = connection.execute(f"""SELECT asset, arg_max(data_version, recorded_at) FROM {LINEAGE_TABLE}
        WHERE asset IN ({', '.join('?' * len(assets))}) GROUP BY asset""", assets).fetchall()
    return dict(rows)


def _key(row: dict) -> tuple[str, str, str]:
    return row["asset"], row["data_version"], row["dagster_run_id"]


class _Graph:
    """Materializations and their input edges, loaded once (the tables are small: one row per step run).

    A materialization consumed, for each input, the newest materialization of that input version recorded
    before it. Edges are resolved that way, not by version alone: a data version rebuilt identically
    from new raw data (e.g. eval suites from an unchanged test file) must not link one generation's
    checkpoint to the other generation's raw files.
    """

    def __init__(self, connection: duckdb.DuckDBPyConnection):
        _require_tables(connection)
        self.rows = _as_dicts(connection.execute(f"SELECT 0 AS depth, {', '.join(LINEAGE_COLUMNS)} FROM "
                                                 f"{LINEAGE_TABLE} ORDER BY recorded_at").fetchall())
        self._by_version: dict[tuple[str, str], list[dict]] = {}
        for row in self.rows:
            self._by_version.setdefault((row["asset"], row["data_version"]), []).append(row)
        edges: dict[tuple, list[tuple[str, str]]] = {}
        for asset, version, run, input_asset, input_version in connection.execute(
                f"SELECT * FROM {INPUTS_TABLE}").fetchall():
            edges.setdefault((asset, version, run), []).append((input_asset, input_version))
        self._parents = {_key(row): [p for p in (self.producer(a, v, row["recorded_at"])
                                                 for a, v in edges.get(_key(row), [])) if p is not None]
                         for row in self.rows}
        self._children: dict[tuple, list[dict]] = {}
        for row in self.rows:
            for parent in self._parents[_key(row)]:
                self._children.setdefault(_key(parent), []).append(row)

    def producer(self, asset: str, version: str, before=None) -> dict | None:
        """The materialization of ``asset@version`` that a step recorded at ``before`` read (else the newest)."""
        candidates = [r for r in self._by_version.get((asset, version), [])
                      if before is None or r["recorded_at"] <= before]
        return candidates[-1] if candidates else None

    def parents(self, row: dict) -> list[dict]:
        return self._parents[_key(row)]

    def children(self, row: dict) -> list[dict]:
        return self._children.get(_key(row), [])


def _walk(start: list[dict], step) -> list[dict]:
    """Breadth-first from ``start``; each row gets its depth; one row per (asset, version), the first met."""
    seen, found, frontier, depth = set(), [], start, 0
    while frontier:
        following = []
        for row in frontier:
            if _key(row) not in seen:
                seen.add(_key(row))
                found.append({**row, "depth": depth})
                following.extend(step(row))
        frontier, depth = following, depth + 1
    return _dedupe(sorted(found, key=lambda r: (r["depth"], r["asset"], r["recorded_at"])))


def upstream(connection: duckdb.DuckDBPyConnection, asset: str, version: str | None = None) -> list[dict]:
    """``asset`` (its newest version unless ``version``) and everything it was built from, by depth."""
    graph = _Graph(connection)
    start = graph.producer(asset, version) if version else next(
        (r for r in reversed(graph.rows) if r["asset"] == asset), None)
    if start is None:
        raise LookupError(f"no lineage recorded for asset '{asset}'" + (f" at version {version}" if version else ""))
    return _walk([start], graph.parents)


def downstream_of_file(connection: duckdb.DuckDBPyConnection, path: str, sha256: str | None = None) -> list[dict]:
    """Every materialization built, directly or not, from a raw file (any of its contents, or one sha)."""
    graph = _Graph(connection)
    wanted = str(Path(path).resolve()) if not path.startswith("synthetic:") else path
    raw = [r for r in graph.rows
           if any(s["path"] == wanted and (sha256 is None or s["sha256"].startswith(sha256)) for s in r["sources"])]
    if not raw:
        raise LookupError(f"no recorded materialization read {wanted}" + (f" with sha256 {sha256}" if sha256 else ""))
    return _walk(raw, graph.children)


def _as_dicts(rows) -> list[dict]:
    names = ("depth", *LINEAGE_COLUMNS)
    return [{**dict(zip(names, row)), "sources": json.loads(row[-1] or "[]")} for row in rows]


def _dedupe(rows: list[dict]) -> list[dict]:
    """One row per (asset, version): the first recording (a reused version is recorded again on re-runs)."""
    seen, kept = set(), []
    for row in rows:
        if (row["asset"], row["data_version"]) not in seen:
            seen.add((row["asset"], row["data_version"]))
            kept.append(row)
    return kept


def _short_commit(commit: str) -> str:
    return commit[:12] + ("+dirty" if commit.endswith("+dirty") else "")


def format_table(rows: list[dict]) -> str:
    header = ["depth", "asset", "data_version", "dagster_run_id", "mlflow_run_id", "git_commit", "config_hash"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row["depth"]), row["asset"], row["data_version"], row["dagster_run_id"][:8],
                 (row["mlflow_run_id"] or "-")[:8], _short_commit(row["git_commit"]), row["config_hash"]]
        lines.append("| " + " | ".join(cells) + " |")
        for source in row["sources"]:
            cells = ["", f"↳ {source.get('published_model') or source['path']}", source["sha256"][:16],
                     *_source_counts(source)]
            lines.append("| " + " | ".join(cells + [""] * (len(header) - len(cells))) + " |")
    return "\n".join(lines)


def _source_counts(source: dict) -> list[str]:
    """What a source counted: raw problem files rows and quarantined, user data and suite files records,
    a cached hub dataset its revision; a published model nothing."""
    if "rows" in source:
        return [f"rows {source['rows']}", f"quarantined {source.get('quarantined', 0)}"]
    return [f"{key} {source[key]}" for key in ("records", "revision") if key in source]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.lineage", description=__doc__.split("\n\n")[0])
    home = Path(os.environ.get("LLM_LINEAGE_HOME", PROJECT_ROOT / "var"))
    common = argparse.ArgumentParser(add_help=False)  # accepted before or after the command
    common.add_argument("--db", default=str(home / "lineage.duckdb"), help="the lineage DuckDB file")
    common.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    commands = parser.add_subparsers(dest="command", required=True)
    back = commands.add_parser("back", parents=[common],
                               help="what produced an asset version (down to raw files and rows)")
    back.add_argument("asset")
    back.add_argument("--version", help="data version (default: the newest)")
    forward = commands.add_parser("forward", parents=[common], help="every materialization that used a raw file")
    forward.add_argument("path", help="raw file path, or a synthetic source such as synthetic:seed=0")
    forward.add_argument("--sha256", help="only the generation(s) with this file content (a prefix will do)")
    args = parser.parse_args(argv)
    if not Path(args.db).is_file():
        parser.error(f"no lineage database at {args.db} (set LLM_LINEAGE_HOME or --db)")
    with duckdb.connect(args.db, read_only=True) as connection:
        try:
            rows = upstream(connection, args.asset, args.version) if args.command == "back" \
                else downstream_of_file(connection, args.path, args.sha256)
        except LookupError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    print("\n".join(json.dumps(r, default=str) for r in rows) if args.json else format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
