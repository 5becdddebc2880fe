"""Shared state without a shared disk (issue #21): a smoke-profile materialization whose checkpoints and tables go to
an S3 bucket and whose MLflow artifacts go there through ``mlflow server --artifacts-destination s3://…``, all on a
real S3-compatible server (moto, tests/fixtures/s3.py); then another host, with an empty home of its own, reads the
tables and finds the current checkpoints in the bucket and loads them with ``from_pretrained``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import dagster as dg
import pytest
import requests

from pipelines.definitions import all_assets, all_checks, default_resources
from resources import CheckpointStore
from resources.object_tables import ObjectTableStore
from tests.fixtures.s3 import _free_port, start_s3_server

pytestmark = pytest.mark.slow
BUCKET = "lineage"
ASSETS = ["raw_problems", "eval_suites", "training_problems", "raw_corpus", "tokenizer", "base_checkpoint"]


def start_mlflow_on_s3(root: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """``mlflow server`` (SQLite runs, artifacts proxied to the bucket) on 127.0.0.1, once /health answers."""
    port = _free_port()
    with open(root / "mlflow.log", "w") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--artifacts-destination", f"s3://{BUCKET}/mlflow", "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, cwd=root, env={**os.environ, **env}, start_new_session=True)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(f"{url}/health", timeout=1).ok:
                return process, url
        except requests.RequestException:
            time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError(f"mlflow server did not start: {(root / 'mlflow.log').read_text()[-2000:]}")


@pytest.fixture
def s3():
    server = start_s3_server()
    try:
        with mock.patch.dict(os.environ, server.env):
            yield server
    finally:
        server.stop()


def test_checkpoints_tables_and_mlflow_artifacts_live_in_the_bucket_and_load_on_another_host(s3, tmp_path):
    import fsspec
    from mlflow import MlflowClient
    from transformers import AutoModelForCausalLM, AutoTokenizer

    bucket = fsspec.filesystem("s3", endpoint_url=s3.endpoint, use_listings_cache=False)
    bucket.mkdir(BUCKET)
    (tmp_path / "mlflow").mkdir()
    server, tracking_uri = start_mlflow_on_s3(tmp_path / "mlflow", s3.env)
    try:
        home = tmp_path / "host_a"
        with mock.patch.dict(os.environ, {"LLM_LINEAGE_CHECKPOINT_URL": f"s3://{BUCKET}/checkpoints",
                                          "LLM_LINEAGE_TABLES_URL": f"s3://{BUCKET}/tables"}):
            resources = default_resources(home, profile="smoke", tracking_uri=tracking_uri)
        job = dg.Definitions(assets=all_assets, asset_checks=all_checks, resources=resources) \
            .resolve_implicit_global_asset_job_def().get_subset(asset_selection={dg.AssetKey(a) for a in ASSETS})
        result = job.execute_in_process()
        assert result.success

        # the checkpoints are in the bucket, current last, and not in host A's checkpoint tree
        for name in ("tokenizer", "base_checkpoint"):
            version = bucket.cat_file(f"{BUCKET}/checkpoints/{name}/current").decode()
            assert bucket.exists(f"{BUCKET}/checkpoints/{name}/versions/{version}/content_manifest.json")
            assert result.asset_materializations_for_node(name)[0].metadata["fingerprint"].value == version
        assert not (home / "checkpoints").exists()

        # the tables are Parquet objects in the bucket, each with its pointer; host A has no DuckDB file
        assert not list(home.glob("**/*.duckdb")) and not (home / "lineage.duckdb").exists()
        pointers = {key.rsplit("/current/", 1)[1] for key in bucket.find(f"{BUCKET}/tables/current")}
        assert {"raw_problems.json", "raw_quarantine.json", "eval_suites.json", "training_problems.json",
                "raw_corpus.json", "table_versions/asset=raw_problems.json"} <= pointers
        assert all(key.endswith(".parquet") for key in bucket.find(f"{BUCKET}/tables/versions"))

        # base_checkpoint's MLflow run: its loss curve went through the server into the bucket
        client = MlflowClient(tracking_uri=tracking_uri)
        experiment = client.get_experiment_by_name(resources["mlflow"].experiment_name)
        [run] = client.search_runs([experiment.experiment_id], "tags.`dagster.asset_key` = 'base_checkpoint'")
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        artifacts = [key for key in bucket.find(f"{BUCKET}/mlflow") if f"/{run.info.run_id}/artifacts/" in key]
        assert [key.rsplit("/", 1)[1] for key in artifacts] == ["loss_curve.png"]
        assert not any((tmp_path / "mlflow").glob("**/loss_curve.png"))

        # host B: a fresh home, nothing local, reads the tables and `current`, and loads the weights from the bucket
        tables = ObjectTableStore(url=f"s3://{BUCKET}/tables", cache_dir=str(tmp_path / "host_b" / "table_cache"))
        assert tables.rows("raw_corpus") == resources["duckdb"].rows("raw_corpus") and tables.count("raw_corpus") > 0
        [published] = tables.query("SELECT data_version FROM table_versions WHERE asset = 'training_problems'")
        assert published["data_version"] == \
            result.asset_materializations_for_node("training_problems")[0].tags["dagster/data_version"]
        other = CheckpointStore(root=f"s3://{BUCKET}/checkpoints", cache_dir=str(tmp_path / "host_b" / "cache"))
        model_dir = other.current("base_checkpoint")
        assert model_dir.is_relative_to(tmp_path / "host_b")
        assert (model_dir / "content_manifest.json").read_bytes() == \
            (resources["checkpoints"].current("base_checkpoint") / "content_manifest.json").read_bytes()
        tokenizer = AutoTokenizer.from_pretrained(other.current("tokenizer"))
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        logits = model(**tokenizer("1 + 1 =", return_tensors="pt")).logits
        assert logits.shape[-1] == model.config.vocab_size
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_a_database_store_puts_artifacts_straight_into_the_bucket(s3, tmp_path):
    """No tracking server between (SQLite here, Postgres in production): each step's MLflow client writes its
    artifacts to ``artifact_root`` itself, through boto3 and MLFLOW_S3_ENDPOINT_URL."""
    import fsspec

    from resources import MLflowTracking

    bucket = fsspec.filesystem("s3", endpoint_url=s3.endpoint, use_listings_cache=False)
    bucket.mkdir(BUCKET)
    tracking = MLflowTracking(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                              artifact_root=f"s3://{BUCKET}/mlflow-direct")
    (tmp_path / "report.md").write_text("# report")
    with tracking.start_run("eval_report") as run:
        run.log_artifact(tmp_path / "report.md")
    client = tracking.client()
    assert client.get_experiment_by_name(tracking.experiment_name).artifact_location == f"s3://{BUCKET}/mlflow-direct"
    key = f"{BUCKET}/mlflow-direct/{run.run_id}/artifacts/report.md"
    assert bucket.cat_file(key) == b"# report"
