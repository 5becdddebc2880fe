"""The lineage audit: which data and code produced an artifact, and what used a raw file.

Read from Dagster's own event log, nothing else. Dagster stamps every materialization with the
exact upstream events its step consumed (tags ``dagster/input_event_pointer/<asset>``: the storage id,
``dagster/input_data_version/<asset>``), its ``dagster/code_version`` and ``dagster/data_version``,
and its run id. ``assets/_lineage.py`` adds what Dagster cannot know as ``lineage/*`` metadata: git
commit, config hash, project version, the raw files / suite files / published models a step read
(``lineage/sources``), and the versions a step read itself where Dagster's tag would not say so
(``lineage/inputs``). Both directions follow those edges, for every generation ever built:

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
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import dagster as dg

PROJECT_ROOT = Path(__file__).resolve().parents[1]
GIT_COMMIT, CONFIG_HASH, PROJECT_VERSION = "lineage/git_commit", "lineage/config_hash", "lineage/project_version"
SOURCES, READ_VERSIONS = "lineage/sources", "lineage/inputs"
INPUT_POINTER, INPUT_VERSION = "dagster/input_event_pointer/", "dagster/input_data_version/"
_PAGE = 1000
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


def project_version() -> str:
    try:
        return metadata.version("llm-lineage")
    except metadata.PackageNotFoundError:
        return "unknown"


def _plain(value):
    return getattr(value, "value", value)


def _row(record: dg.EventLogRecord) -> dict:
    """One materialization as an audit row; ``inputs`` maps each upstream asset to (version, pointer)."""
    event = record.asset_materialization
    meta, tags = event.metadata, event.tags or {}
    read = _plain(meta.get(READ_VERSIONS)) or {}
    inputs = {}
    for tag, value in tags.items():
        if tag.startswith(INPUT_VERSION):
            asset = tag[len(INPUT_VERSION):]
            pointer = tags.get(INPUT_POINTER + asset, "NULL")
            inputs[asset] = (read.get(asset, value), int(pointer) if pointer.isdigit() else None)
    for asset, version in read.items():  # a version the step read itself, of an input Dagster has no tag for
        inputs.setdefault(asset, (version, None))
    return {"depth": 0, "asset": event.asset_key.to_user_string(),
            "data_version": tags.get("dagster/data_version") or "-", "dagster_run_id": record.run_id,
            "mlflow_run_id": _plain(meta.get("mlflow_run_id")), "git_commit": _plain(meta.get(GIT_COMMIT)) or "unknown",
            "config_hash": _plain(meta.get(CONFIG_HASH)) or "-", "code_version": tags.get("dagster/code_version"),
            "project_version": _plain(meta.get(PROJECT_VERSION)), "sources": _plain(meta.get(SOURCES)) or [],
            "storage_id": record.storage_id, "inputs": inputs,
            "recorded_at": datetime.fromtimestamp(record.timestamp, timezone.utc).isoformat()}


class _Graph:
    """Every materialization in the instance and the exact upstream materialization each one consumed.

    An edge is the consumed event's storage id (``dagster/input_event_pointer``). Only without a usable
    pointer (none recorded, or the step read another version itself: ``lineage/inputs``) is it resolved
    by version: the newest materialization of that version before the consumer's. A version alone is not
    enough: a table rebuilt identically from new raw data must not link one generation's checkpoint to
    the other generation's raw files.
    """

    def __init__(self, instance: dg.DagsterInstance):
        self.rows = sorted((_row(r) for key in instance.get_asset_keys() for r in _materializations(instance, key)),
                           key=lambda r: r["storage_id"])
        if not self.rows:
            raise LookupError("no materialization in this Dagster instance: materialize some assets first")
        self._by_id = {r["storage_id"]: r for r in self.rows}
        self._parents = {r["storage_id"]: [p for p in (self._consumed(r, asset, version, pointer)
                                                       for asset, (version, pointer) in sorted(r["inputs"].items()))
                                           if p is not None] for r in self.rows}
        self._children: dict[int, list[dict]] = {}
        for row in self.rows:
            for parent in self._parents[row["storage_id"]]:
                self._children.setdefault(parent["storage_id"], []).append(row)

    def _consumed(self, row: dict, asset: str, version: str, pointer: int | None) -> dict | None:
        pointed = self._by_id.get(pointer)
        if pointed is not None and pointed["data_version"] == version:
            return pointed
        return self.producer(asset, version, before=row["storage_id"])

    def producer(self, asset: str, version: str | None = None, before: int | None = None) -> dict | None:
        """The newest materialization of ``asset`` (at ``version``; recorded before storage id ``before``)."""
        return next((r for r in reversed(self.rows) if r["asset"] == asset
                     and (version is None or r["data_version"] == version)
                     and (before is None or r["storage_id"] < before)), None)

    def parents(self, row: dict) -> list[dict]:
        return self._parents[row["storage_id"]]

    def children(self, row: dict) -> list[dict]:
        return self._children.get(row["storage_id"], [])


def _materializations(instance: dg.DagsterInstance, key: dg.AssetKey) -> list[dg.EventLogRecord]:
    records, cursor = [], None
    while True:
        page = instance.fetch_materializations(key, limit=_PAGE, cursor=cursor, ascending=True)
        records += [r for r in page.records if r.asset_materialization is not None]
        if not page.has_more:
            return records
        cursor = page.cursor


def _walk(start: list[dict], step) -> list[dict]:
    """Breadth-first from ``start``; each row gets its depth; one row per (asset, version), the first met."""
    seen, found, frontier, depth = set(), [], start, 0
    while frontier:
        following = []
        for row in frontier:
            if row["storage_id"] not in seen:
                seen.add(row["storage_id"])
                found.append({**row, "depth": depth})
                following.extend(step(row))
        frontier, depth = following, depth + 1
    return _dedupe(sorted(found, key=lambda r: (r["depth"], r["asset"], r["storage_id"])))


def _public(row: dict) -> dict:
    """The row as printed: inputs as asset -> consumed data version."""
    return {**row, "inputs": {asset: version for asset, (version, _) in row["inputs"].items()}}


def upstream(instance: dg.DagsterInstance, asset: str, version: str | None = None) -> list[dict]:
    """``asset`` (its newest version unless ``version``) and everything it was built from, by depth."""
    graph = _Graph(instance)
    start = graph.producer(asset, version)
    if start is None:
        raise LookupError(f"no materialization of asset '{asset}'" + (f" at version {version}" if version else ""))
    return [_public(r) for r in _walk([start], graph.parents)]


def downstream_of_file(instance: dg.DagsterInstance, path: str, sha256: str | None = None) -> list[dict]:
    """Every materialization built, directly or not, from a raw file (any of its contents, or one sha)."""
    graph = _Graph(instance)
    wanted = str(Path(path).resolve()) if not path.startswith("synthetic:") else path
    raw = [r for r in graph.rows if any(s.get("path") == wanted and (sha256 is None or s["sha256"].startswith(sha256))
                                        for s in r["sources"])]
    if not raw:
        raise LookupError(f"no recorded materialization read {wanted}" + (f" with sha256 {sha256}" if sha256 else ""))
    return [_public(r) for r in _walk(raw, graph.children)]


def _dedupe(rows: list[dict]) -> list[dict]:
    """One row per (asset, version): the first met (a reused version is materialized again on re-runs)."""
    seen, kept = set(), []
    for row in rows:
        if (row["asset"], row["data_version"]) not in seen:
            seen.add((row["asset"], row["data_version"]))
            kept.append(row)
    return kept


def _short_commit(commit: str) -> str:
    return commit[:12] + ("+dirty" if commit.endswith("+dirty") else "")


def format_table(rows: list[dict]) -> str:
    header = ["depth", "asset", "data_version", "dagster_run_id", "mlflow_run_id", "git_commit", "config_hash",
              "code_version"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row["depth"]), row["asset"], row["data_version"], row["dagster_run_id"][:8],
                 (row["mlflow_run_id"] or "-")[:8], _short_commit(row["git_commit"]), row["config_hash"],
                 row.get("code_version") or "-"]
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


def default_dagster_home() -> str:
    """``$DAGSTER_HOME``, else ``$LLM_LINEAGE_HOME/dagster_home`` (where the Makefile puts it)."""
    home = os.environ.get("LLM_LINEAGE_HOME", str(PROJECT_ROOT / "var"))
    return os.environ.get("DAGSTER_HOME") or str(Path(home) / "dagster_home")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.lineage", description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)  # accepted before or after the command
    common.add_argument("--dagster-home", default=default_dagster_home(),
                        help="the Dagster instance's directory (default: $DAGSTER_HOME, else "
                             "$LLM_LINEAGE_HOME/dagster_home)")
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
    home = Path(args.dagster_home)
    if not (home / "history").is_dir() and not (home / "dagster.yaml").is_file():
        parser.error(f"no Dagster instance at {home} (set DAGSTER_HOME, LLM_LINEAGE_HOME or --dagster-home)")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        try:
            rows = upstream(instance, args.asset, args.version) if args.command == "back" \
                else downstream_of_file(instance, args.path, args.sha256)
        except LookupError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    print("\n".join(json.dumps(r, default=str) for r in rows) if args.json else format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
