"""Training on Ray (issue #21): the smoke profile's ``base_checkpoint`` trained by a Ray job on two Ray Train workers
of a real local Ray head (tests/fixtures/ray.py), its logs and loss curve back in Dagster and MLflow through Pipes;
a Ray job that fails fails the step with Ray's reason; a Dagster run stopped with Ctrl-C stops its Ray job."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest

from assets.checkpoints import base_checkpoint
from pipelines.definitions import PROJECT_ROOT, all_assets, all_checks, default_resources
from pipelines.profiles import SMOKE
from pipelines.training.job import TrainJob, write_rows
from resources import RayTrainingLauncher
from tests.fixtures.ray import running_ray_head

pytestmark = pytest.mark.slow
UPSTREAM = ["raw_problems", "eval_suites", "training_problems", "raw_corpus", "tokenizer"]


@pytest.fixture(scope="module")
def ray_head():
    with running_ray_head() as head:
        yield head


@pytest.fixture(scope="module")
def lineage(tmp_path_factory):
    """base_checkpoint's upstream, materialized here (no training); MLflow in a SQLite file."""
    home = tmp_path_factory.mktemp("ray_lineage")
    resources = default_resources(home, profile="smoke", tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    job = dg.Definitions(assets=all_assets, asset_checks=all_checks, resources=resources) \
        .resolve_implicit_global_asset_job_def().get_subset(asset_selection={dg.AssetKey(a) for a in UPSTREAM})
    instance = dg.DagsterInstance.ephemeral()
    assert job.execute_in_process(instance=instance).success
    return home, resources, instance


def _ray_jobs(head, dagster_run_id: str) -> list:
    from ray.job_submission import JobSubmissionClient

    return [job for job in JobSubmissionClient(head.address).list_jobs()
            if (job.metadata or {}).get("dagster_run_id") == dagster_run_id]


def test_base_checkpoint_trains_on_two_ray_train_workers(ray_head, lineage):
    from transformers import AutoModelForCausalLM

    home, resources, instance = lineage
    launcher = RayTrainingLauncher(address=ray_head.address, work_root=str(home / "work"), num_workers=2)
    started = time.monotonic()
    result = dg.materialize([base_checkpoint], resources={**resources, "launcher": launcher}, instance=instance)
    print(f"base_checkpoint on 2 Ray Train workers: {time.monotonic() - started:.1f}s")
    assert result.success

    # trained, by two workers (the world size rank 0 reported), and published
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("base_checkpoint")[0].metadata.items()}
    steps = SMOKE.pretrain.max_steps
    assert metadata["reused"] is False and metadata["pretrain/steps"] == steps and metadata["pretrain/processes"] == 2
    model = AutoModelForCausalLM.from_pretrained(resources["checkpoints"].current("base_checkpoint"))
    assert model.config.hidden_size == SMOKE.model.hidden_size

    # the Ray job of this run: the TorchTrainer entrypoint, succeeded
    [ray_job] = _ray_jobs(ray_head, result.run_id)
    assert ray_job.status.value == "SUCCEEDED"
    assert "pipelines.training.ray_entry" in ray_job.entrypoint and "--workers 2" in ray_job.entrypoint

    # rank 0's Pipes logs reached the run; its metric batches reached MLflow while it trained
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(f"step {steps}/{steps} loss" in message for message in messages)
    [run] = resources["mlflow"].runs("tags.`dagster.asset_key` = 'base_checkpoint'")
    history = resources["mlflow"].client().get_metric_history(run.info.run_id, "pretrain/loss")
    logging = SMOKE.pretrain.logging_steps
    assert [m.step for m in history] == list(range(logging, steps + 1, logging)) and len(history) > 1


def test_a_failed_ray_job_fails_the_step_with_its_reason(ray_head, tmp_path):
    """The trainer refuses a job whose process count is not the launch's (1 worker here): the Ray job fails,
    and the step's error has Ray's status and the trainer's own message from the job's log."""
    data = write_rows([{"text": "1 + 1 = 2"}], tmp_path / "corpus.jsonl")
    job = TrainJob(recipe="pretrain", data_file=str(data), settings=SMOKE.pretrain, tokenizer_dir=str(tmp_path),
                   model_shape=SMOKE.model, output_dir=str(tmp_path / "out"), num_processes=3)

    @dg.asset
    def trained(context: dg.AssetExecutionContext, launcher: RayTrainingLauncher) -> None:
        launcher.run(context, job, tmp_path / "job.json")

    launcher = RayTrainingLauncher(address=ray_head.address, work_root=str(tmp_path), num_workers=1)
    result = dg.materialize([trained], resources={"launcher": launcher}, raise_on_error=False)
    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error
    message = (error.cause or error).message
    assert "ended FAILED" in message and "the job says num_processes=3" in message
    [ray_job] = _ray_jobs(ray_head, result.run_id)
    assert ray_job.status.value == "FAILED"


def test_stopping_the_dagster_run_stops_its_ray_job(ray_head, lineage, tmp_path):
    """``dagster asset materialize`` with the launcher selected by the environment, Ctrl-C once its Ray job's
    workers run: the step stops the job (STOPPED, its Train workers gone) and the run fails."""
    home, resources, _ = lineage
    config = {"ops": {"base_checkpoint": {"config": {"max_steps": 2000}}}}
    env = {**os.environ, "LLM_LINEAGE_HOME": str(home), "LLM_LINEAGE_PROFILE": "smoke", "DAGSTER_HOME": str(tmp_path),
           "MLFLOW_TRACKING_URI": resources["mlflow"].tracking_uri, "LLM_LINEAGE_LAUNCHER": "ray",
           "LLM_LINEAGE_RAY_ADDRESS": ray_head.address, "LLM_LINEAGE_RAY_WORKERS": "2"}
    log = tmp_path / "materialize.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "--select", "base_checkpoint",
             "-m", "pipelines.definitions", "--config-json", json.dumps(config)],
            cwd=PROJECT_ROOT, env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    try:
        ray_job = _wait_for_training(ray_head, process, log)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) != 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    from ray.job_submission import JobSubmissionClient

    assert JobSubmissionClient(ray_head.address).get_job_status(ray_job.submission_id).value == "STOPPED"
    deadline = time.monotonic() + 30  # the workers are actors of the stopped driver: Ray ends them
    while _train_workers(ray_head):
        assert time.monotonic() < deadline, "Ray Train workers still running after the job stopped"
        time.sleep(0.5)
    assert "stopping Ray job" in log.read_text()


def _wait_for_training(head, process, log: Path, timeout_s: float = 240):
    """The run's Ray job, once it runs and its two Train workers have started."""
    from ray.job_submission import JobSubmissionClient

    client, deadline = JobSubmissionClient(head.address), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the run ended first: {log.read_text()[-3000:]}"
        jobs = [job for job in client.list_jobs() if "--workers 2" in job.entrypoint and job.status.value == "RUNNING"]
        if jobs and len(_train_workers(head)) == 2:
            return jobs[0]
        time.sleep(0.5)
    raise AssertionError(f"no training Ray job in {timeout_s}s: {log.read_text()[-3000:]}")


def _train_workers(head) -> list:
    workers = []
    for process in head.processes():
        try:
            if "RayTrainWorker" in " ".join(process.cmdline()):
                workers.append(process)
        except psutil.Error:
            pass
    return workers
