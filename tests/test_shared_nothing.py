"""Issue #21's acceptance: the whole smoke lineage, materialized by the Dagster CLI, with training on a local Ray
cluster, checkpoints, tables, the eval report and MLflow's artifacts in an S3 bucket (moto), Dagster's and MLflow's
stores on Postgres, and no disk shared between the Dagster host and the Ray workers: each has its own scratch
directory, the lineage home is never created, and the raw-data folder is an empty one beside them (the smoke
profile generates its problems; the eval suites are read from the repository's ``data/``, read-only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import yaml

from pipelines.definitions import PROJECT_ROOT, all_assets
from tests.fixtures.ray import running_ray_head
from tests.fixtures.s3 import start_s3_server

pytestmark = pytest.mark.slow
BUCKET = "lineage"
CHECKPOINTS = ("base_checkpoint", "instruct_checkpoint", "think_sft_checkpoint", "reasoning_checkpoint",
               "reasoning_round_1_checkpoint")  # the smoke profile's one self-improvement round
# the smoke profile's training stages (instruct: SFT only; reasoning: DPO, no GRPO; the round: SFT), one Ray job each
RAY_RECIPES = ["dpo", "pretrain", "sft", "sft", "sft"]
RAY_WORKERS = 2  # every stage on two Ray Train workers (gloo, one CPU each)
TRAINED_AND_EVALUATED = {"tokenizer", *CHECKPOINTS, "eval_base", "eval_instruct", "eval_reasoning_round_0",
                         "eval_reasoning", "eval_scores", "eval_report"}


@pytest.fixture
def s3():
    server = start_s3_server()
    yield server
    server.stop()


@pytest.fixture
def ray_head():
    with running_ray_head() as head:
        yield head


def dagster_instance_yaml(postgres, database: str) -> str:
    """The project's dagster.yaml with Dagster's run, event and schedule storage on ``database``."""
    storage = {"storage": {"postgres": {"postgres_db": {
        "username": postgres.role, "password": postgres.password, "hostname": postgres.host, "port": postgres.port,
        "db_name": database, "scheme": "postgresql+psycopg2"}}}}
    return (PROJECT_ROOT / "dagster.yaml").read_text() + "\n" + yaml.safe_dump(storage)


def test_the_smoke_lineage_runs_on_ray_s3_and_postgres_with_no_shared_disk(s3, postgres, ray_head, tmp_path):
    import fsspec
    from mlflow import MlflowClient
    from ray.job_submission import JobSubmissionClient

    bucket = fsspec.filesystem("s3", endpoint_url=s3.endpoint, key="testing", secret="testing",
                               use_listings_cache=False)
    bucket.mkdir(BUCKET)
    for database in ("nothing_shared_dagster", "nothing_shared_mlflow"):  # not the session's: other tests count rows
        postgres.create_database(database)
    tracking_uri = postgres.url("nothing_shared_mlflow")
    # the MLflow schema, as a deployment creates it once (`mlflow db upgrade`): the run's parallel steps must not
    # race to create it
    MlflowClient(tracking_uri=tracking_uri).search_experiments()

    dagster_home, home = tmp_path / "dagster_home", tmp_path / "lineage_home"
    host_scratch, worker_scratch, raw_dir = tmp_path / "host_scratch", tmp_path / "worker_scratch", tmp_path / "raw"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(dagster_instance_yaml(postgres, "nothing_shared_dagster"))
    env = {**os.environ, **s3.env, "DAGSTER_HOME": str(dagster_home), "LLM_LINEAGE_PROFILE": "smoke",
           "LLM_LINEAGE_HOME": str(home), "LLM_LINEAGE_SCRATCH": str(host_scratch), "LLM_LINEAGE_RAW_DIR": str(raw_dir),
           "MLFLOW_TRACKING_URI": tracking_uri, "LLM_LINEAGE_MLFLOW_ARTIFACT_ROOT": f"s3://{BUCKET}/mlflow",
           "LLM_LINEAGE_CHECKPOINT_URL": f"s3://{BUCKET}/checkpoints", "LLM_LINEAGE_TABLES_URL": f"s3://{BUCKET}/tables",
           "LLM_LINEAGE_LAUNCHER": "ray", "LLM_LINEAGE_RAY_ADDRESS": ray_head.address,
           "LLM_LINEAGE_RAY_WORKERS": str(RAY_WORKERS), "LLM_LINEAGE_RAY_WORKER_SCRATCH": str(worker_scratch)}
    started = time.monotonic()
    completed = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "--select", "*",
         "-m", "pipelines.definitions"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=1500)
    print(f"smoke lineage on Ray + S3 + Postgres: {time.monotonic() - started:.0f}s")
    log = completed.stdout + completed.stderr
    assert completed.returncode == 0, log[-6000:]

    # no step read or wrote the lineage home; the host kept its caches and work folders in its own scratch
    assert not home.exists(), sorted(str(p) for p in home.rglob("*"))[:20]
    assert {"checkpoint_cache", "table_cache", "work"} <= {p.name for p in host_scratch.iterdir()}
    assert not (host_scratch / "ray_jobs").exists() and not list(host_scratch.rglob("fetched.json"))

    # Dagster's run and its materializations are in Postgres (a fresh instance reads them back), nothing in SQLite
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        materialized = {entry.asset_materialization.asset_key.to_user_string() for entry in instance.all_logs(
            run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)}
    expected = {key.to_user_string() for a in all_assets if isinstance(a, dg.AssetsDefinition) and a.is_materializable
                for key in a.keys}
    assert materialized == expected
    assert not (dagster_home / "history").exists()
    with psycopg2.connect(host=postgres.host, port=postgres.port, user=postgres.role, password=postgres.password,
                          dbname="nothing_shared_dagster") as connection, connection.cursor() as cursor:
        cursor.execute("SELECT run_id, status FROM runs")
        assert cursor.fetchall() == [(run.run_id, "SUCCESS")]

    # every training stage ran as a Ray job on two workers, staged through the bucket, and succeeded
    ray_jobs = [job for job in JobSubmissionClient(ray_head.address).list_jobs()
                if (job.metadata or {}).get("dagster_run_id") == run.run_id]
    assert sorted(job.metadata["recipe"] for job in ray_jobs) == RAY_RECIPES
    for job in ray_jobs:
        assert job.status.value == "SUCCEEDED", (job.submission_id, job.message)
        assert f"--job-url s3://{BUCKET}/checkpoints/_ray_jobs/{job.submission_id}" in job.entrypoint
        assert f"--workers {RAY_WORKERS}" in job.entrypoint
        submitted = json.dumps({"entrypoint": job.entrypoint, "runtime_env": job.runtime_env})
        assert str(host_scratch) not in submitted and str(home) not in submitted  # no path of the host's files
        assert job.runtime_env["env_vars"]["AWS_ENDPOINT_URL"] == s3.endpoint  # the bucket, through runtime_env
    assert not bucket.find(f"{BUCKET}/checkpoints/_ray_jobs/")  # each job's staged files deleted after it

    # each worker downloaded the job's inputs into the workers' scratch, and freed it, keeping the record
    for job in ray_jobs:
        places = sorted(p.name for p in (worker_scratch / "ray_jobs" / job.submission_id).iterdir())
        assert places == [f"rank-{rank}" for rank in range(RAY_WORKERS)]  # the driver's Ray Train state is gone
        for rank in range(RAY_WORKERS):
            directory = worker_scratch / "ray_jobs" / job.submission_id / f"rank-{rank}"
            assert [p.name for p in directory.iterdir()] == ["fetched.json"], job.submission_id
            files = json.loads((directory / "fetched.json").read_text())["files"]
            assert any(name.startswith("data_file/") and size > 0 for name, size in files.items())
            inputs = "tokenizer_dir" if job.metadata["recipe"] == "pretrain" else "model_dir"
            assert f"{inputs}/config.json" in files or f"{inputs}/tokenizer.json" in files, sorted(files)

    # the checkpoints and the eval report are in the bucket (current, with manifests); the tables too
    for name in ("tokenizer", *CHECKPOINTS, "eval_report"):
        version = bucket.cat_file(f"{BUCKET}/checkpoints/{name}/current").decode()
        assert bucket.exists(f"{BUCKET}/checkpoints/{name}/versions/{version}/content_manifest.json"), name
    assert bucket.exists(f"{BUCKET}/checkpoints/base_checkpoint/versions/{version_of(bucket, 'base_checkpoint')}"
                         "/model.safetensors")
    pointers = {key.rsplit("/current/", 1)[1] for key in bucket.find(f"{BUCKET}/tables/current")}
    assert {"raw_problems.json", "training_problems.json", "eval_scores.json"} <= pointers

    # MLflow's runs and metrics are in Postgres, their artifacts in the bucket
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("llm-lineage")
    assert experiment.artifact_location == f"s3://{BUCKET}/mlflow"
    runs = client.search_runs([experiment.experiment_id], f"tags.`dagster.run_id` = '{run.run_id}'")
    assert {r.data.tags["dagster.asset_key"] for r in runs} >= TRAINED_AND_EVALUATED
    [base] = [r for r in runs if r.data.tags["dagster.asset_key"] == "base_checkpoint"]
    assert len(client.get_metric_history(base.info.run_id, "pretrain/loss")) > 1
    assert base.info.artifact_uri.startswith(f"s3://{BUCKET}/mlflow/")
    assert bucket.exists(f"{BUCKET}/mlflow/{base.info.run_id}/artifacts/loss_curve.png")
    [report] = [r for r in runs if r.data.tags["dagster.asset_key"] == "eval_report"]
    assert bucket.exists(f"{BUCKET}/mlflow/{report.info.run_id}/artifacts/report.md")
    with psycopg2.connect(host=postgres.host, port=postgres.port, user=postgres.role, password=postgres.password,
                          dbname="nothing_shared_mlflow") as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM metrics WHERE run_uuid = %s AND key = 'pretrain/loss'",
                       (base.info.run_id,))
        assert cursor.fetchone()[0] > 1


def version_of(bucket, name: str) -> str:
    return bucket.cat_file(f"{BUCKET}/checkpoints/{name}/current").decode()
