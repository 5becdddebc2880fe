"""[evals] The lineage audit as an asset: what produced the current evaluation report, down to raw files."""

import dagster as dg

from assets._automation import UPSTREAM_DATA_CHANGED
from assets._lineage import recorded
from assets.evals import eval_report
from pipelines.lineage import content_fingerprint, format_table, upstream


@dg.asset(group_name="evals", deps=[eval_report], automation_condition=UPSTREAM_DATA_CHANGED)
def lineage_report(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Every dataset, checkpoint and eval output behind the current report, with data versions, config
    hashes, git commits, Dagster and MLflow run ids, and the raw files and row counts at the root, read
    from this Dagster instance's event log (the inputs each step consumed).
    The other direction (raw file → everything built from it): ``python -m pipelines.lineage forward``."""
    rows = upstream(context.instance, "eval_report")
    raw_files = [source for row in rows for source in row["sources"]]
    return recorded(dg.MaterializeResult(
        data_version=dg.DataVersion(content_fingerprint([(r["asset"], r["data_version"]) for r in rows])),
        metadata={"lineage": dg.MetadataValue.md(format_table(rows)), "artifacts": len(rows),
                  "raw_files": dg.MetadataValue.json(raw_files),
                  "git_commits": dg.MetadataValue.json(sorted({r["git_commit"] for r in rows}))}))
