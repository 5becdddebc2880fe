"""[raw] The raw-data folder (observed, versioned by content) and the problems everything else is
derived from."""

import warnings

import dagster as dg
from pydantic import Field

from assets._lineage import recorded, rows_version
from assets._metadata import preview
from pipelines.data.ingest import DEFAULT_MAX_LINE_BYTES, quarantine_rate
from pipelines.data.problems import Problem
from pipelines.data.raw import JSONL, QUARANTINE_COLUMNS, choose_source, load_raw_problems, source_records
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


class RawProblemsConfig(dg.Config):
    """Where raw problems come from. Unset numbers take the active profile's values."""

    source: str | None = Field(
        default=None, description="Default: 'folder' when the raw-data folder holds *.jsonl files, else "
        "'synthetic' (the seeded generator). 'jsonl' reads jsonl_paths.")
    jsonl_paths: list[str] = Field(default_factory=list, description="GSM8K-format files; a name containing "
                                   "'test' marks its problems as held-out.")
    question_field: str = "question"
    answer_field: str = Field(default="answer", description="Worked solution ending in '#### N'.")
    n_problems: int | None = Field(default=None, description="Synthetic: how many distinct problems.")
    seed: int | None = None
    max_operand: int | None = None
    eval_fraction: float | None = Field(default=None, description="Synthetic: share held out for eval.")
    max_line_bytes: int = Field(default=DEFAULT_MAX_LINE_BYTES, description="JSONL: longer lines are "
                                "quarantined as 'too_long'.")


@dg.asset(group_name="raw", deps=[raw_data_files], kinds={"python", "duckdb"})
def raw_problems(context: dg.AssetExecutionContext, config: RawProblemsConfig, duckdb: DuckDBStore,
                 profile: LineageProfile, raw_data: RawDataFolder) -> dg.MaterializeResult:
    """Problems with worked solutions and exact answers; bad input lines go to ``raw_quarantine``."""
    data = with_overrides(profile.settings().data, config.model_dump())
    snapshot = raw_data.snapshot()
    source = choose_source(config.source, snapshot)
    paths = config.jsonl_paths if source == JSONL else [f["path"] for f in snapshot.files]
    result = load_raw_problems(source, data, paths, config.question_field, config.answer_field,
                               config.max_line_bytes)
    rows = [p.as_row() for p in result.problems]
    duckdb.replace_table("raw_problems", rows, columns=list(Problem.__dataclass_fields__))
    duckdb.replace_table("raw_quarantine", [q.as_row() for q in result.quarantined], columns=QUARANTINE_COLUMNS)
    splits = {split: sum(r["split"] == split for r in rows) for split in ("train", "test")}
    return recorded(context, duckdb, dg.MaterializeResult(data_version=dg.DataVersion(rows_version(rows)), metadata={
        "source": source, "lines_read": result.lines_read, "kept": len(rows), "quarantined": len(result.quarantined),
        "train_rows": splits["train"], "test_rows": splits["test"],
        "quarantine_reasons": dg.MetadataValue.json(result.quarantine_counts()),
        "dagster/row_count": len(rows),
        "preview": preview(rows, ["split", "question", "solution", "answer"]),
    }), config, inputs={"raw_data_files": snapshot.fingerprint},
        sources=source_records(result, source, paths, data))


class QuarantineRateConfig(dg.Config):
    max_quarantine_rate: float | None = Field(default=None, description="Fail when a larger share of the "
                                              "lines read was quarantined (0-1); unset: the profile's value.")


@dg.asset_check(asset=raw_problems, blocking=True,
                description="Few enough raw lines were quarantined; otherwise nothing downstream is built.")
def raw_quarantine_rate_below_threshold(config: QuarantineRateConfig, duckdb: DuckDBStore,
                                        profile: LineageProfile) -> dg.AssetCheckResult:
    limit = config.max_quarantine_rate
    if limit is None:
        limit = profile.settings().data.max_quarantine_rate
    if not 0.0 <= limit <= 1.0:
        raise ValueError(f"max_quarantine_rate must be between 0 and 1, got {limit}")
    kept, quarantined = duckdb.count("raw_problems"), duckdb.count("raw_quarantine")
    rate = quarantine_rate(kept, quarantined)
    reasons = duckdb.query("SELECT kind, count(*) AS n FROM raw_quarantine GROUP BY kind ORDER BY n DESC")
    return dg.AssetCheckResult(
        passed=rate <= limit, severity=dg.AssetCheckSeverity.ERROR,
        description=None if rate <= limit else f"{quarantined} of {kept + quarantined} raw lines quarantined "
                                               f"({rate:.1%}), over the {limit:.1%} limit: see raw_quarantine",
        metadata={"quarantine_rate": rate, "max_quarantine_rate": limit, "kept": kept, "quarantined": quarantined,
                  "reasons": dg.MetadataValue.json({r["kind"]: r["n"] for r in reasons})})

