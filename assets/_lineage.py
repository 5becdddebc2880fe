"""Every asset ends with ``recorded(...)``: its materialization joins the DuckDB lineage audit.

Inputs are the newest recorded versions of the asset's upstream assets (what this step just read);
``inputs`` adds or overrides some, e.g. the raw-data folder version that the raw stage hashed itself.
"""

import json

import dagster as dg

from pipelines.lineage import LineageRecord, append, content_fingerprint, ensure_tables, git_commit, latest_versions
from resources import DuckDBStore


def _plain(value):
    return getattr(value, "value", value)


def recorded(context: dg.AssetExecutionContext, duckdb: DuckDBStore, result: dg.MaterializeResult,
             config: dg.Config | None = None, inputs: dict[str, str] | None = None,
             sources: list[dict] | None = None) -> dg.MaterializeResult:
    metadata = dict(result.metadata or {})
    data_version = result.data_version.value if result.data_version else content_fingerprint(
        {k: str(_plain(v)) for k, v in metadata.items()})
    upstream = [key.to_user_string() for key in context.assets_def.asset_deps[context.asset_key]]
    with duckdb.connect() as connection:
        ensure_tables(connection)
        consumed = {**latest_versions(connection, upstream), **(inputs or {})}
        append(connection, LineageRecord(
            asset=context.asset_key.to_user_string(), data_version=data_version, dagster_run_id=context.run.run_id,
            inputs=consumed, mlflow_run_id=_plain(metadata.get("mlflow_run_id")),
            config=config.model_dump() if config is not None else {}, sources=sources or []))
    metadata |= {"lineage/inputs": dg.MetadataValue.json(consumed), "lineage/git_commit": git_commit()}
    return dg.MaterializeResult(data_version=dg.DataVersion(data_version), metadata=metadata,
                                check_results=result.check_results, tags=result.tags)


def rows_version(rows: list[dict]) -> str:
    """Data version of a table: its content, so an identical rebuild keeps the same version."""
    return content_fingerprint(sorted(json.dumps(r, sort_keys=True, default=str) for r in rows))
