"""Check-gated tables: published only when their blocking checks pass, read only at the version consumed.

A DuckDB table is shared by every run, so "the table now" is not evidence of anything: a concurrent
run may have replaced it, or a run whose blocking check failed may have written rejected rows into
it. Tables that a blocking check guards therefore go through this module:

- ``publish_tables`` replaces them *and* records their data version in ``table_versions``, in one
  transaction (``DuckDBStore.publish``; in object storage, the table's own pointer records it), and the
  asset calls it only after its check passed on the rows it holds in memory.
  Rejected rows never reach the table the next stage reads.
- ``read_published`` reads a table together with its recorded version, in one snapshot, and
  compares it with the data version of the asset's latest materialization in Dagster's event log
  (what Dagster records as this step's input). A mismatch means the latest materialization was
  rejected by its blocking check, or another run replaced the table meanwhile; the step fails with a
  message saying which, instead of building on rows the audit would misattribute.

Together they make "nothing downstream of a failed blocking check is built" hold for every trigger
(CLI, job, schedule, sensor, automation), not just inside the run whose check failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from resources import DuckDBStore
from resources.duckdb_store import TABLE_VERSIONS  # noqa: F401  (tests import it from here)

DATA_VERSION_TAG = "dagster/data_version"


class UpstreamNotPublished(RuntimeError):
    """The table a step needs holds no version that passed its checks, or not the one Dagster consumed."""


def publish_tables(duckdb: DuckDBStore, asset: str, data_version: str, run_id: str,
                   tables: dict[str, tuple[Sequence[dict], Sequence[str] | None] | Path]) -> None:
    """Replace ``tables`` (name -> (rows, columns)) and record ``asset``'s published version atomically.

    A ``Path`` is an immutable parquet file (named by its version) too large to hold as rows: the store
    publishes the file itself (a view over it in the DuckDB file; the object in object storage)."""
    duckdb.publish(asset, data_version, run_id, {
        name: rows if isinstance(rows, Path) else duckdb.frame(name, *rows) for name, rows in tables.items()})


def failed_checks(instance: dg.DagsterInstance, check_keys: list[dg.AssetCheckKey]) -> list[str]:
    """Checks whose latest evaluation failed, with their descriptions."""
    failed = []
    for key in check_keys:
        record = instance.get_latest_asset_check_evaluation_record(key)
        evaluation = record.evaluation if record is not None else None
        if evaluation is not None and not evaluation.passed:
            failed.append(key.name + (f" ({evaluation.description})" if evaluation.description else ""))
    return failed


def blocking_check_keys(asset: dg.AssetsDefinition) -> list[dg.AssetCheckKey]:
    return [spec.key for spec in asset.check_specs if spec.blocking]


def require_passed_on_latest(context: dg.AssetExecutionContext, asset_key: dg.AssetKey,
                             check_keys: list[dg.AssetCheckKey]) -> None:
    """Fail unless each check passed on ``asset_key``'s latest materialization (not an older one).

    For a step that acts on an upstream asset outside the data tables (a registry alias, say): a
    later run selecting only this step must not act on a candidate that its gate rejected."""
    name = asset_key.to_user_string()
    latest = next(iter(context.instance.fetch_materializations(asset_key, limit=1).records), None)
    if latest is None:
        raise UpstreamNotPublished(f"'{name}' has never been materialized in this Dagster instance")
    for key in check_keys:
        record = context.instance.get_latest_asset_check_evaluation_record(key)
        evaluation = record.evaluation if record is not None else None
        target = evaluation.target_materialization_data if evaluation is not None else None
        if evaluation is None or target is None or target.storage_id != latest.storage_id:
            raise UpstreamNotPublished(
                f"'{name}': its latest materialization (run {latest.run_id}) has not been checked by "
                f"{key.name}; run the check (or materialize '{name}' with it) first")
        if not evaluation.passed:
            raise UpstreamNotPublished(
                f"'{name}': its latest materialization (run {latest.run_id}) failed the blocking check "
                f"{key.name}" + (f" ({evaluation.description})" if evaluation.description else "") +
                "; nothing downstream is built until a newer materialization passes")


def consumed_version(context: dg.AssetExecutionContext, asset: dg.AssetsDefinition) -> str | None:
    """The data version of ``asset``'s latest materialization: what this step consumes as its input."""
    event = context.instance.get_latest_materialization_event(asset.key)
    if event is None or event.asset_materialization is None:
        return None
    return event.asset_materialization.tags.get(DATA_VERSION_TAG)


def read_published(context: dg.AssetExecutionContext, duckdb: DuckDBStore, asset: dg.AssetsDefinition,
                   sql: str | None = None) -> tuple[list[dict], str]:
    """Rows of ``asset``'s table (or of ``sql`` over it) and their version, which Dagster also consumed."""
    name = asset.key.to_user_string()
    expected = consumed_version(context, asset)
    rows, published = duckdb.published_rows(name, sql)  # the version and the rows from one snapshot
    if expected is None:
        raise UpstreamNotPublished(f"'{name}' has never been materialized in this Dagster instance: "
                                   f"materialize it first (its blocking checks must pass)")
    if published is None or published[0] != expected:
        failed = failed_checks(context.instance, blocking_check_keys(asset))
        holds = f"version {published[0]} (run {published[1]})" if published else "no checked version"
        if failed:
            raise UpstreamNotPublished(
                f"'{name}': its latest materialization (data version {expected}) failed the blocking check "
                f"{'; '.join(failed)}. Nothing downstream is built until a newer materialization passes; "
                f"the table still holds {holds}.")
        raise UpstreamNotPublished(
            f"'{name}': the table holds {holds}, but the latest materialization is data version {expected}: "
            f"another run replaced it meanwhile. Re-run this step; it will read one consistent version.")
    return rows, published[0]
