"""The code location: assets, checks, resources, jobs, the schedule and sensors that ``workspace.yaml`` loads.

Paths and the profile come from the environment so one definition serves the demo, tests and
deployments: ``LLM_LINEAGE_HOME`` (data root, default ``./var``), ``LLM_LINEAGE_PROFILE`` (``tiny``),
``MLFLOW_TRACKING_URI`` (default: a SQLite file under the data root), ``LLM_LINEAGE_RAW_DIR`` (the
watched raw-data folder, default ``<home>/raw_data``), ``LLM_LINEAGE_RETRAIN_CRON`` (weekly retrain),
``LLM_LINEAGE_EXECUTOR`` (``local``, or ``k8s``: each step a Kubernetes Job, ``pipelines/runtime/cluster.py``);
for hosts without a shared disk, ``LLM_LINEAGE_CHECKPOINT_URL`` (checkpoints and the eval report in
``s3://bucket/prefix``, ``resources/object_checkpoints.py``) and ``LLM_LINEAGE_MLFLOW_ARTIFACT_ROOT`` (MLflow
artifacts there too, with a database tracking store) and ``LLM_LINEAGE_TABLES_URL`` (the tables as Parquet objects
there, ``resources/object_tables.py``); ``LLM_LINEAGE_SCRATCH`` (this host's caches and work folders, default
the home: with all three URLs and ``MLFLOW_TRACKING_URI`` set, a step keeps nothing in the home). Ray jobs then
travel through the bucket too (``LLM_LINEAGE_RAY_STAGING_URL``, default ``<checkpoint URL>/_ray_jobs``;
``LLM_LINEAGE_RAY_WORKER_SCRATCH``: the Ray nodes' local directory), so the Ray nodes share no disk with this host.
``LLM_LINEAGE_GENERATION_ON=ray`` runs the eval steps' generation as Ray jobs on that cluster too
(``pipelines/evaluation/ray_generation.py``; default ``local``, in the step).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import dagster as dg  # noqa: E402

from assets import audit, checkpoints, datasets, evals, promotion, raw, self_improvement  # noqa: E402
from assets._catalog import CODE_VERSIONS, OWNERS  # noqa: E402
from pipelines.automation import (automation_sensor, dead_run_reaper, raw_data_sensor, retrain_job,  # noqa: E402
                                  weekly_retrain)
from pipelines.runtime.executor import step_executor  # noqa: E402
from pipelines.lineage import content_fingerprint  # noqa: E402
from pipelines.profiles import PROFILES  # noqa: E402
from pipelines.runtime.cluster import selected_executor  # noqa: E402
from pipelines.runtime.ray_jobs import cluster_settings  # noqa: E402
from resources import (CheckpointStore, DuckDBStore, LineageProfile, MLflowTracking, RawDataFolder,  # noqa: E402
                       RayTrainingLauncher, TrainingLauncher)
from resources.object_tables import ObjectTableStore  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def data_home() -> Path:
    return Path(os.environ.get("LLM_LINEAGE_HOME", PROJECT_ROOT / "var")).resolve()


def scratch_home(home: Path | None = None) -> Path:
    """This host's caches and work folders: ``LLM_LINEAGE_SCRATCH``, else the lineage home (as before it existed)."""
    return Path(os.environ.get("LLM_LINEAGE_SCRATCH") or home or data_home()).resolve()


def _secret(variable: str) -> dg.EnvVar | None:
    """A secret resource field: read from the environment by Dagster at run time, never stored in config."""
    return dg.EnvVar(variable) if os.environ.get(variable) else None


def default_resources(home: Path | None = None, profile: str | None = None,
                      tracking_uri: str | None = None) -> dict:
    """Resources rooted at ``home``: one DuckDB file, one MLflow store, one checkpoint tree; caches and work folders
    in the scratch directory (``scratch_home``)."""
    home = home or data_home()
    scratch = scratch_home(home)
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    checkpoint_url = os.environ.get("LLM_LINEAGE_CHECKPOINT_URL")  # object storage shared by hosts; else local
    tables_url = os.environ.get("LLM_LINEAGE_TABLES_URL")  # the tables as Parquet there too; else one DuckDB file
    return {
        "duckdb": ObjectTableStore(url=tables_url, cache_dir=str(scratch / "table_cache")) if tables_url
        else DuckDBStore(path=str(home / "lineage.duckdb")),
        "checkpoints": CheckpointStore(root=checkpoint_url, cache_dir=str(scratch / "checkpoint_cache")) if checkpoint_url
        else CheckpointStore(root=str(home / "checkpoints")),
        "mlflow": MLflowTracking(tracking_uri=tracking_uri, artifact_root=os.environ.get(
                                     "LLM_LINEAGE_MLFLOW_ARTIFACT_ROOT") or str(home / "mlflow" / "artifacts"),
                                 ui_url=os.environ.get("MLFLOW_UI_URL", "http://127.0.0.1:5000"),
                                 dagster_ui_url=os.environ.get("DAGSTER_UI_URL", "http://127.0.0.1:3000"),
                                 tracking_token=_secret("MLFLOW_TRACKING_TOKEN"),
                                 tracking_password=_secret("MLFLOW_TRACKING_PASSWORD")),
        "profile": LineageProfile(name=profile or os.environ.get("LLM_LINEAGE_PROFILE", "tiny")),
        # LLM_LINEAGE_LAUNCHER=ray: a Ray job per training stage on the cluster at LLM_LINEAGE_RAY_ADDRESS (its
        # dashboard), with LLM_LINEAGE_RAY_WORKERS Ray Train workers (resources/ray_launcher.py); else subprocesses here.
        # With checkpoints in object storage the jobs are staged through it: the Ray nodes need no disk shared with us.
        "launcher": RayTrainingLauncher(work_root=str(scratch / "work"),
                                        num_workers=int(os.environ.get("LLM_LINEAGE_RAY_WORKERS", "1")),
                                        **cluster_settings())
        if os.environ.get("LLM_LINEAGE_LAUNCHER", "local") == "ray" else
        TrainingLauncher(work_root=str(scratch / "work"),
                         num_processes=int(os.environ.get("LLM_LINEAGE_TRAIN_PROCESSES", "1"))),
        "raw_data": RawDataFolder(path=os.environ.get("LLM_LINEAGE_RAW_DIR", str(home / "raw_data"))),
    }


LINEAGE_MODULES = (raw, datasets, checkpoints, self_improvement, evals, promotion, audit)


def profile_version(name: str) -> str:
    """The active profile's settings as a version: they are the step code's defaults (model shape, steps, suite
    sizes), so changing them, or the profile, makes every asset stale in Dagster's eyes (within a run each step
    still reuses what its own fingerprint finds unchanged)."""
    return f"{name}-{content_fingerprint(dataclasses.asdict(PROFILES[name]))[:8]}"


def with_catalog_entries(assets: list) -> list:
    """Every materializable asset carries its step code's version with the active profile's
    (``assets/_catalog.py``, ``profile_version``) and its owners."""
    profile = profile_version(os.environ.get("LLM_LINEAGE_PROFILE", "tiny"))
    return [a if not isinstance(a, dg.AssetsDefinition) or not a.is_materializable else dg.map_asset_specs(
        lambda spec: spec.replace_attributes(code_version=f"{CODE_VERSIONS[spec.key.to_user_string()]}+{profile}",
                                             owners=OWNERS[spec.group_name]), [a])[0]
        for a in assets]


all_assets = with_catalog_entries(dg.load_assets_from_modules(LINEAGE_MODULES))
all_checks = dg.load_asset_checks_from_modules(LINEAGE_MODULES)

defs = dg.Definitions(assets=all_assets, asset_checks=all_checks, jobs=[retrain_job],
                      schedules=[weekly_retrain], sensors=[raw_data_sensor, automation_sensor, dead_run_reaper],
                      resources=default_resources(), executor=selected_executor(step_executor))
