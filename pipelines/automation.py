"""When the lineage rebuilds by itself: a raw-data sensor, a weekly retrain, declarative automation.

- ``raw_data_sensor`` hashes the raw-data folder every minute; when the content differs from what
  ``raw_problems`` last read, it records the new version of ``raw_data_files`` and requests
  ``raw_problems`` and ``raw_training_data`` (both read the folder). Unchanged content requests
  nothing (the run key is the content hash, too).
- Every derived asset carries ``UPSTREAM_DATA_CHANGED`` (``assets/_automation.py``);
  ``lineage_automation`` evaluates those conditions, so a new raw data version flows through
  datasets, checkpoints and evals, and an identical rebuild stops the cascade at once.
- ``weekly_retrain`` runs the whole lineage on a cron; fingerprint reuse makes a tick with nothing
  changed train and regenerate nothing.
All three are on by default: none of them trains unless data or code changed.
- ``dead_run_reaper`` fails runs whose worker process died (``kill -9``), kills their orphaned steps
  and frees their pool slots, so later model steps are not blocked for ever (``pipelines/runtime``).
"""

from __future__ import annotations

import os

import dagster as dg

from assets.raw import raw_data_files, raw_problems, raw_training_data
from pipelines.runtime.reaper import reap_dead_runs
from resources import RawDataFolder

DEFAULT_RETRAIN_CRON = "0 3 * * 1"  # Mondays 03:00 UTC
SENSOR_INTERVAL_S = 60
AUTOMATION_INTERVAL_S = 30
REAPER_INTERVAL_S = 30

retrain_job = dg.define_asset_job(
    "retrain", selection=dg.AssetSelection.assets(raw_problems, raw_training_data).downstream(),
    description="The whole lineage from the raw problems to the eval and lineage reports; unchanged "
                "checkpoints and eval outputs are reused, not rebuilt.")

weekly_retrain = dg.ScheduleDefinition(
    name="weekly_retrain", job=retrain_job, cron_schedule=os.environ.get("LLM_LINEAGE_RETRAIN_CRON", DEFAULT_RETRAIN_CRON),
    execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Retrain on a timer (LLM_LINEAGE_RETRAIN_CRON); reuses everything that did not change.")


def last_consumed_raw_version(instance: dg.DagsterInstance) -> str | None:
    """The raw-data folder version that the latest ``raw_problems`` materialization read."""
    event = instance.get_latest_materialization_event(raw_problems.key)
    if event is None or event.asset_materialization is None:
        return None
    inputs = event.asset_materialization.metadata.get("lineage/inputs")
    return inputs.value.get("raw_data_files") if inputs is not None else None


RAW_READERS = [raw_problems, raw_training_data]


@dg.sensor(name="raw_data_sensor", target=RAW_READERS, minimum_interval_seconds=SENSOR_INTERVAL_S,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Requests raw_problems and raw_training_data when the raw-data folder's content hash changes.")
def raw_data_sensor(context: dg.SensorEvaluationContext, raw_data: RawDataFolder):
    snapshot = raw_data.snapshot()
    consumed = last_consumed_raw_version(context.instance)
    if consumed is None:
        return dg.SkipReason("the lineage has not been built yet: materialize it once (make demo or the UI); "
                             "from then on a change in the raw-data folder triggers a rebuild")
    if consumed == snapshot.fingerprint:
        return dg.SkipReason(f"raw data unchanged ({len(snapshot.files)} files, version {snapshot.fingerprint})")
    observation = dg.AssetObservation(
        asset_key=raw_data_files.key, tags={"dagster/data_version": snapshot.fingerprint},
        metadata={"files": len(snapshot.files),
                  "file_hashes": dg.MetadataValue.json({f["name"]: f["sha256"] for f in snapshot.files})})
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"raw-data-{snapshot.fingerprint}",
                                    asset_selection=[a.key for a in RAW_READERS],
                                    tags={"llm_lineage/raw_data_version": snapshot.fingerprint})],
        asset_events=[observation])


automation_sensor = dg.AutomationConditionSensorDefinition(
    "lineage_automation", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=AUTOMATION_INTERVAL_S,
    description="Evaluates every asset's automation condition: rebuild when an input's data changed.")


@dg.sensor(name="dead_run_reaper", minimum_interval_seconds=REAPER_INTERVAL_S,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Fails runs whose worker process died (kill -9, OOM), kills their orphaned step "
                       "processes and frees their pool slots.")
def dead_run_reaper(context: dg.SensorEvaluationContext):
    reaped = reap_dead_runs(context.instance, context.log)
    return dg.SkipReason(f"reaped {len(reaped)} dead runs: {', '.join(r.run_id for r in reaped)}" if reaped
                         else "every active run has a live worker")
