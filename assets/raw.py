"""[raw] The problems everything else is derived from, and the pretraining corpus made of them."""

from typing import Literal

import dagster as dg
from pydantic import Field

from assets._metadata import preview
from pipelines.data.datasets import build_corpus, problems_from_rows
from pipelines.data.ingest import DEFAULT_MAX_LINE_BYTES, quarantine_rate
from pipelines.data.problems import Problem
from pipelines.data.raw import QUARANTINE_COLUMNS, load_raw_problems
from pipelines.profiles import with_overrides
from resources import DuckDBStore, LineageProfile


class RawProblemsConfig(dg.Config):
    """Where raw problems come from. Unset numbers take the active profile's values."""

    source: Literal["synthetic", "jsonl"] = Field(default="synthetic", description="Generator or JSONL files.")
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


@dg.asset(group_name="raw", kinds={"python", "duckdb"})
def raw_problems(config: RawProblemsConfig, duckdb: DuckDBStore, profile: LineageProfile) -> dg.MaterializeResult:
    """Problems with worked solutions and exact answers; bad input lines go to ``raw_quarantine``."""
    data = with_overrides(profile.settings().data, config.model_dump())
    result = load_raw_problems(config.source, data, config.jsonl_paths, config.question_field, config.answer_field,
                               config.max_line_bytes)
    rows = [p.as_row() for p in result.problems]
    duckdb.replace_table("raw_problems", rows, columns=list(Problem.__dataclass_fields__))
    duckdb.replace_table("raw_quarantine", [q.as_row() for q in result.quarantined], columns=QUARANTINE_COLUMNS)
    splits = {split: sum(r["split"] == split for r in rows) for split in ("train", "test")}
    return dg.MaterializeResult(metadata={
        "lines_read": result.lines_read, "kept": len(rows), "quarantined": len(result.quarantined),
        "train_rows": splits["train"], "test_rows": splits["test"],
        "quarantine_reasons": dg.MetadataValue.json(result.quarantine_counts()),
        "dagster/row_count": len(rows),
        "preview": preview(rows, ["split", "question", "solution", "answer"]),
    })


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


@dg.asset(group_name="raw", deps=[raw_problems], kinds={"python", "duckdb"})
def raw_corpus(duckdb: DuckDBStore) -> dg.MaterializeResult:
    """Pretraining documents for the base model, from the training split only."""
    documents = build_corpus(problems_from_rows(duckdb.rows("raw_problems")))
    duckdb.replace_table("raw_corpus", documents, columns=["problem_id", "text"])
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(documents),
        "characters": sum(len(d["text"]) for d in documents),
        "preview": preview(documents, ["text"]),
    })
