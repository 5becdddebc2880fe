"""[raw] The raw-data folder (observed, versioned by content) and the problems everything else is
derived from."""

import warnings
from collections import Counter
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

from assets._lineage import recorded, rows_version
from assets._metadata import column_schema, preview
from assets._tables import publish_tables
from pipelines.data.conversations import ROW_COLUMNS
from pipelines.data.ingest import DEFAULT_MAX_LINE_BYTES, quarantine_problem, quarantine_rate
from pipelines.data.problems import Problem
from pipelines.data.raw import (JSONL, QUARANTINE_COLUMNS, FolderSnapshot, choose_source, load_raw_problems,
                                source_records)
from pipelines.data.records import FORMATS
from pipelines.data.user_data import TrainingSource, chat_files, ingest_training_data, rejection_problem
from pipelines.paths import confine
from pipelines.profiles import with_overrides
from resources import DuckDBStore, LineageProfile, RawDataFolder


with warnings.catch_warnings():  # observable source assets are "beta" in Dagster 1.13, and the right tool
    warnings.simplefilter("ignore", dg.BetaWarning)

    @dg.observable_source_asset(
        group_name="raw", description="The raw-data folder; its data version is the content hash of its "
        "files (renaming or touching them changes nothing).")
    def raw_data_files(raw_data: RawDataFolder) -> dg.ObserveResult:
        snapshot = raw_data.snapshot()
        return dg.ObserveResult(data_version=dg.DataVersion(snapshot.fingerprint), metadata={
            "folder": dg.MetadataValue.path(snapshot.folder), "files": len(snapshot.files),
            "bytes": sum(f["bytes"] for f in snapshot.files),
            "file_hashes": dg.MetadataValue.json({f["name"]: f["sha256"] for f in snapshot.files}),
        })


def _observed(context: dg.AssetExecutionContext, raw_data: RawDataFolder) -> FolderSnapshot:
    """The folder snapshot this step reads, also recorded as an observation of ``raw_data_files``: its
    version is then known from the first build on (not only after the sensor sees a change), and it is
    the version this step consumed."""
    snapshot = raw_data.snapshot()
    context.log_event(dg.AssetObservation(asset_key=raw_data_files.key,
                                          tags={"dagster/data_version": snapshot.fingerprint},
                                          metadata={"files": len(snapshot.files),
                                                    "observed_by": context.asset_key.to_user_string()}))
    return snapshot


QUARANTINE_CHECK = "raw_quarantine_rate_below_threshold"


class RawProblemsConfig(dg.Config):
    """Where raw problems come from. Unset numbers take the active profile's values."""

    source: str | None = Field(
        default=None, description="Default: 'folder' when the raw-data folder holds *.jsonl files, else "
        "'synthetic' (the seeded generator). 'jsonl' reads jsonl_paths.")
    jsonl_paths: list[str] = Field(default_factory=list, description="GSM8K-format files; a name containing "
                                   "'test' marks its problems as held-out.")
    question_field: str = "question"
    answer_field: str = Field(default="answer", description="Worked solution ending in '#### N'.")
    n_problems: int | None = Field(default=None, gt=0, description="Synthetic: how many distinct problems.")
    seed: int | None = None
    max_operand: int | None = Field(default=None, gt=0)
    eval_fraction: float | None = Field(default=None, ge=0, le=1, description="Synthetic: share held out for eval.")
    max_line_bytes: int = Field(default=DEFAULT_MAX_LINE_BYTES, gt=0, description="JSONL: longer lines are "
                                "quarantined as 'too_long'.")
    max_quarantine_rate: float | None = Field(default=None, ge=0, le=1, description="The blocking check fails "
                                              "when a larger share of the lines read was quarantined (0-1); "
                                              "unset: the profile's value.")


def quarantine_verdict(lines_read: int, kept: int, quarantined: int, reasons: dict[str, int],
                       limit: float) -> dg.AssetCheckResult:
    """The blocking check, on exactly the rows this step read (never on the shared table)."""
    problem = quarantine_problem(lines_read, kept, quarantined, limit)
    description = problem if problem is None or lines_read == 0 else f"{problem}: see raw_quarantine_rejected"
    return dg.AssetCheckResult(
        check_name=QUARANTINE_CHECK, passed=description is None, severity=dg.AssetCheckSeverity.ERROR,
        description=description, metadata={
            "quarantine_rate": quarantine_rate(kept, quarantined), "max_quarantine_rate": limit,
            "lines_read": lines_read, "kept": kept,
            "quarantined": quarantined, "reasons": dg.MetadataValue.json(reasons)})


@dg.asset(group_name="raw", deps=[raw_data_files], kinds={"python", "duckdb"}, check_specs=[dg.AssetCheckSpec(
    QUARANTINE_CHECK, asset="raw_problems", blocking=True,
    description="Few enough raw lines were quarantined and the source is not empty; otherwise the rows are "
                "not published and nothing downstream is built.")])
def raw_problems(context: dg.AssetExecutionContext, config: RawProblemsConfig, duckdb: DuckDBStore,
                 profile: LineageProfile, raw_data: RawDataFolder) -> dg.MaterializeResult:
    """Problems with worked solutions and exact answers; bad input lines go to ``raw_quarantine``.

    The quarantine-rate check runs in this step on the rows just read. Only when it passes are the rows
    published to ``raw_problems`` / ``raw_quarantine``; a rejected read goes to ``raw_quarantine_rejected``
    for inspection and the published tables keep the last accepted version (``assets/_tables.py``)."""
    data = with_overrides(profile.settings().data, config.model_dump())
    snapshot = _observed(context, raw_data)
    folder_files = [f["path"] for f in snapshot.files]
    chat = set(chat_files(folder_files))  # the user's own training data: raw_training_data reads those
    problem_files = [p for p in folder_files if p not in chat]
    source = choose_source(config.source, problem_files)
    paths = config.jsonl_paths if source == JSONL else problem_files
    result = load_raw_problems(source, data, paths, config.question_field, config.answer_field,
                               config.max_line_bytes, expected=snapshot)  # the bytes read are the bytes hashed
    rows = [p.as_row() for p in result.problems]
    quarantined = [q.as_row() for q in result.quarantined]
    limit = data.max_quarantine_rate if config.max_quarantine_rate is None else config.max_quarantine_rate
    verdict = quarantine_verdict(result.lines_read, len(rows), len(quarantined), result.quarantine_counts(), limit)
    version = rows_version(rows)
    if verdict.passed:
        publish_tables(duckdb, "raw_problems", version, context.run.run_id, {
            "raw_problems": (rows, list(Problem.__dataclass_fields__)),
            "raw_quarantine": (quarantined, QUARANTINE_COLUMNS)})
    else:
        context.log.error(f"raw_problems rejected, not published: {verdict.description}")
        duckdb.replace_table("raw_quarantine_rejected", quarantined, columns=QUARANTINE_COLUMNS)
    splits = {split: sum(r["split"] == split for r in rows) for split in ("train", "test")}
    return recorded(dg.MaterializeResult(data_version=dg.DataVersion(version), metadata={
        "source": source, "lines_read": result.lines_read, "kept": len(rows), "quarantined": len(quarantined),
        "published": verdict.passed, "train_rows": splits["train"], "test_rows": splits["test"],
        "quarantine_reasons": dg.MetadataValue.json(result.quarantine_counts()),
        "dagster/row_count": len(rows),
        "dagster/column_schema": column_schema(rows, list(Problem.__dataclass_fields__)),
        "preview": preview(rows, ["split", "question", "solution", "answer"]),
    }, check_results=[verdict]), config, inputs={"raw_data_files": snapshot.fingerprint},
        sources=source_records(result, source, paths, data))


TRAINING_DATA_CHECK = "raw_training_data_quarantine_rate_below_threshold"


class TrainingSourceConfig(dg.Config):
    """A user's training data: a file, folder, ``save_to_disk`` directory or cached hub id."""

    path: str = Field(description="Local path (under the data roots) or a hub dataset id in the local cache.")
    kind: Literal["auto", "sft", "think", "preference"] = Field(
        default="auto", description="The dataset it feeds; auto: per record, by its fields (chosen/rejected: "
        "preference; <think> or reasoning_content: think; else sft).")
    format: Literal[FORMATS] = "auto"
    split: str = "train"
    columns: dict[str, str] = Field(default_factory=dict, description="Your column names, e.g. "
                                    "{prompt: question, completion: response}.")
    max_rows: int | None = Field(default=None, gt=0, description="Mixing: keep at most this many rows from it.")

    def source(self) -> TrainingSource:
        """A local path is confined to the data roots; with format auto, a name that is no local path is
        taken for a hub id (read from the local cache only)."""
        local = confine(self.path, f"sources[{self.path}].path")
        hub = self.format == "hub" or (self.format == "auto" and not local.exists())
        kind = None if self.kind == "auto" else self.kind
        return TrainingSource(self.path if hub else str(local), kind, self.format, self.split, dict(self.columns),
                              self.max_rows)


class RawTrainingDataConfig(dg.Config):
    """Sources beyond the chat / reasoning / preference files dropped into the raw-data folder."""

    sources: list[TrainingSourceConfig] = Field(default_factory=list)
    max_line_bytes: int = Field(default=DEFAULT_MAX_LINE_BYTES, gt=0)
    max_quarantine_rate: float | None = Field(default=None, ge=0, le=1, description="Unset: the profile's value.")


@dg.asset(group_name="raw", deps=[raw_data_files], kinds={"python", "duckdb"}, check_specs=[dg.AssetCheckSpec(
    TRAINING_DATA_CHECK, asset="raw_training_data", blocking=True,
    description="Every source gave rows and few enough records were quarantined; otherwise nothing is published.")])
def raw_training_data(context: dg.AssetExecutionContext, config: RawTrainingDataConfig, duckdb: DuckDBStore,
                      profile: LineageProfile, raw_data: RawDataFolder) -> dg.MaterializeResult:
    """Your own SFT conversations, reasoning traces and preference pairs (TRL / axolotl / LLaMA-Factory
    formats), one row per record of kind sft / think / preference; bad records go to
    ``raw_training_quarantine`` with file, row and reason. None at all is fine: the lineage then trains
    on its problems alone."""
    snapshot = _observed(context, raw_data)
    sources = [TrainingSource(p) for p in chat_files([f["path"] for f in snapshot.files])]
    sources += [source.source() for source in config.sources]
    limit = profile.settings().data.max_quarantine_rate if config.max_quarantine_rate is None \
        else config.max_quarantine_rate
    versions = Path(duckdb.path).parent / "tables" / "raw_training_data"  # immutable parquet files, by version
    incoming = versions / f".incoming-{context.run.run_id}.parquet"
    try:
        result = ingest_training_data(sources, incoming, max_line_bytes=config.max_line_bytes,
                                      expected_sha256={f["path"]: f["sha256"] for f in snapshot.files})
        problem = rejection_problem(result.outcomes, limit)
        verdict = dg.AssetCheckResult(check_name=TRAINING_DATA_CHECK, passed=problem is None,
                                      severity=dg.AssetCheckSeverity.ERROR, description=problem, metadata={
                                          "records": result.records, "quarantined": len(result.quarantined),
                                          "max_quarantine_rate": limit})
        first = _first_rows(incoming)
        if verdict.passed:
            rows_file = incoming.replace(versions / f"{result.version}.parquet")
            publish_tables(duckdb, "raw_training_data", result.version, context.run.run_id, {
                "raw_training_data": rows_file, "raw_training_quarantine": (result.quarantined, QUARANTINE_COLUMNS)})
        else:
            context.log.error(f"raw_training_data rejected, not published: {problem}")
            duckdb.replace_table("raw_training_quarantine_rejected", result.quarantined, columns=QUARANTINE_COLUMNS)
    finally:
        incoming.unlink(missing_ok=True)
    kept = dict(result.kept)
    return recorded(dg.MaterializeResult(data_version=dg.DataVersion(result.version), metadata={
        "sources": dg.MetadataValue.json([o.summary() for o in result.outcomes]), "records": result.records,
        "kept": dg.MetadataValue.json(kept), "quarantined": len(result.quarantined), "published": verdict.passed,
        "quarantine_reasons": dg.MetadataValue.json(dict(Counter(q["kind"] for q in result.quarantined))),
        "dagster/row_count": sum(kept.values()),
        "dagster/column_schema": column_schema(first, ROW_COLUMNS),
        "preview": preview(first, ["kind", "prompt", "completion", "chosen", "rejected"]),
    }, check_results=[verdict]), config, inputs={"raw_data_files": snapshot.fingerprint}, sources=result.audit())


def _first_rows(parquet: Path, n: int = 5) -> list[dict]:
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(parquet)
    return rows.read_row_group(0).slice(0, n).to_pylist() if rows.num_row_groups else []
