"""Eval generation on Ray (``LLM_LINEAGE_GENERATION_ON=ray``, pipelines/evaluation/ray_generation.py): eval_instruct
materialized with its generation as a Ray job of a real local Ray head (tests/fixtures/ray.py), once on shared paths
and once staged through an S3 bucket (moto) into the worker's own scratch, and with the ``vllm`` backend (the node's
vLLM virtualenv). The Ray job SUCCEEDED, and the step stored the same greedy generations, row for row, as the same
step generating in its own process."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from unittest import mock

import dagster as dg
import pytest

from assets.datasets import eval_suites
from assets.evals import eval_instruct
from assets.raw import raw_problems
from pipelines.definitions import default_resources
from pipelines.evaluation.ray_generation import GENERATION_ON_ENV, on_ray
from tests.fixtures.hf_models import save_llama3_instruct
from tests.fixtures.ray import running_ray_head
from tests.fixtures.s3 import s3_with_bucket

pytestmark = pytest.mark.slow
BUCKET = "generation"
QUERY = ("SELECT suite, problem_id, sample_index, seed, prompt, output, output_tokens, decoding, model_version "
         "FROM eval_generations ORDER BY suite, problem_id, sample_index")


@pytest.fixture(scope="module")
def ray_head():
    with running_ray_head() as head:
        yield head


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_llama3_instruct(tmp_path_factory.mktemp("published") / "Llama-3-Instruct", hidden=128)


def _materialize_eval(home: Path, model: Path, backend: str = "hf") -> list[dict]:
    """raw_problems, eval_suites (the smoke suites and 8 GSM8K items) and eval_instruct (greedy, on ``model``) into a
    fresh ``home``; the generations the eval step stored."""
    resources = default_resources(home, profile="smoke", tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    ops = {"eval_suites": {"config": {"builtin_suites": ["gsm8k"], "builtin_limit": 8}},
           "eval_instruct": {"config": {"published_model": str(model), "method": "greedy", "samples": 1,
                                        "max_new_tokens": 16, "few_shot": 0, "backend": backend}}}
    started = time.monotonic()
    result = dg.materialize([raw_problems, eval_suites, eval_instruct], resources=resources, run_config={"ops": ops})
    print(f"eval_instruct materialized ({os.environ.get(GENERATION_ON_ENV) or 'local'}): "
          f"{time.monotonic() - started:.1f}s")
    assert result.success
    rows = resources["duckdb"].query(QUERY)
    assert "gsm8k" in {row["suite"] for row in rows} and any(row["output_tokens"] > 1 for row in rows)
    return rows


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory, model) -> list[dict]:
    """The same step generating in its own process (the default)."""
    with mock.patch.dict(os.environ):
        os.environ.pop(GENERATION_ON_ENV, None)
        return _materialize_eval(tmp_path_factory.mktemp("local"), model)


def _generation_jobs(head) -> dict:
    from ray.job_submission import JobSubmissionClient

    return {job.submission_id: job for job in JobSubmissionClient(head.address).list_jobs()
            if (job.metadata or {}).get("llm_lineage") == "generation"}


def test_an_unknown_generation_place_is_a_clear_error():
    assert not on_ray({}) and on_ray({GENERATION_ON_ENV: "ray"})
    with pytest.raises(ValueError, match="LLM_LINEAGE_GENERATION_ON='k8s': expected 'local'"):
        on_ray({GENERATION_ON_ENV: "k8s"})


def test_eval_generation_runs_as_a_ray_job_on_shared_paths(ray_head, model, local_rows, tmp_path, monkeypatch):
    before = _generation_jobs(ray_head)
    monkeypatch.setenv(GENERATION_ON_ENV, "ray")
    monkeypatch.setenv("LLM_LINEAGE_RAY_ADDRESS", ray_head.address)
    monkeypatch.setenv("LLM_LINEAGE_SCRATCH", str(tmp_path / "host_scratch"))  # the job file, read by the node
    rows = _materialize_eval(tmp_path / "lineage", model)

    [job] = [job for key, job in _generation_jobs(ray_head).items() if key not in before]
    assert job.status.value == "SUCCEEDED", job.message
    assert "pipelines.evaluation.ray_generation --job " in job.entrypoint
    assert job.metadata["variant"] == "instruct" and job.metadata["backend"] == "hf"
    assert rows == local_rows
    assert not list((tmp_path / "host_scratch" / "ray_generation").iterdir())  # the job's files freed


def test_eval_generation_runs_as_a_ray_job_staged_through_a_bucket(ray_head, model, local_rows, tmp_path,
                                                                   monkeypatch):
    import fsspec

    before = _generation_jobs(ray_head)
    worker_scratch = tmp_path / "worker_scratch"
    with s3_with_bucket(BUCKET) as s3:
        monkeypatch.setenv(GENERATION_ON_ENV, "ray")
        monkeypatch.setenv("LLM_LINEAGE_RAY_ADDRESS", ray_head.address)
        monkeypatch.setenv("LLM_LINEAGE_RAY_STAGING_URL", f"s3://{BUCKET}/jobs")
        monkeypatch.setenv("LLM_LINEAGE_RAY_WORKER_SCRATCH", str(worker_scratch))
        monkeypatch.setenv("LLM_LINEAGE_SCRATCH", str(tmp_path / "host_scratch"))
        rows = _materialize_eval(tmp_path / "lineage", model)
        bucket = fsspec.filesystem("s3", endpoint_url=s3.endpoint, use_listings_cache=False)
        assert not bucket.find(f"{BUCKET}/jobs/")  # the staged job, checkpoint and rows deleted after it

    [job] = [job for key, job in _generation_jobs(ray_head).items() if key not in before]
    assert job.status.value == "SUCCEEDED", job.message
    assert f"--job-url s3://{BUCKET}/jobs/{job.submission_id}" in job.entrypoint
    assert job.runtime_env["env_vars"]["AWS_ENDPOINT_URL"] == s3.endpoint
    assert str(model) not in json.dumps({"entrypoint": job.entrypoint, "runtime_env": job.runtime_env})
    assert rows == local_rows

    # the worker fetched the checkpoint into its own scratch and freed it, keeping the record
    directory = worker_scratch / "ray_jobs" / job.submission_id / "generation"
    assert [p.name for p in directory.iterdir()] == ["fetched.json"]
    files = json.loads((directory / "fetched.json").read_text())["files"]
    assert "model_dir/config.json" in files and "model_dir/model.safetensors" in files, sorted(files)


def test_vllm_generation_runs_as_a_ray_job_with_the_nodes_vllm_environment(ray_head, model, local_rows, tmp_path,
                                                                           monkeypatch):
    """Backend ``vllm``: the Ray job starts the node's vLLM worker (vllm_launch.py, its own virtualenv); greedy in
    float32, its outputs equal hf's (tests/pipelines/test_vllm_backend.py)."""
    from pipelines.evaluation.vllm_launch import MAKE_TARGET, VllmSettings

    if not VllmSettings.from_env().python.exists():
        pytest.fail(f"the vLLM virtualenv is missing: run `{MAKE_TARGET}` (make test-engines does)")
    before = _generation_jobs(ray_head)
    monkeypatch.setenv(GENERATION_ON_ENV, "ray")
    monkeypatch.setenv("LLM_LINEAGE_RAY_ADDRESS", ray_head.address)
    monkeypatch.setenv("LLM_LINEAGE_SCRATCH", str(tmp_path / "host_scratch"))
    rows = _materialize_eval(tmp_path / "lineage", model, backend="vllm")

    [job] = [job for key, job in _generation_jobs(ray_head).items() if key not in before]
    assert job.status.value == "SUCCEEDED" and job.metadata["backend"] == "vllm", job.message
    assert all('"backend": "vllm"' in row["decoding"] for row in rows)
    assert [{**row, "decoding": None} for row in rows] == [{**row, "decoding": None} for row in local_rows]
