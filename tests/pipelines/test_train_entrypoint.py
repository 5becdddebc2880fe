"""The training script as a real process: standalone runs, and kill -9 followed by a resume."""

import gc
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

from transformers import AutoModelForCausalLM

from pipelines.data.datasets import build_sft
from pipelines.definitions import PROJECT_ROOT
from pipelines.tracking import make_client
from pipelines.training.job import TrainJob, write_rows
from pipelines.training.recipes import latest_checkpoint
from pipelines.training.train import SUMMARY_FILE
from tests.pipelines.conftest import micro_settings

KILL_DEADLINE_S = 180


def _job(tmp_path, base_dir, problems, steps: int, save_steps: int) -> TrainJob:
    data = write_rows(build_sft(problems), tmp_path / "sft.jsonl")
    return TrainJob(recipe="sft", data_file=str(data), settings=micro_settings(steps, batch_size=4),
                    model_dir=str(base_dir), output_dir=str(tmp_path / "out"), work_dir=str(tmp_path / "work"),
                    save_steps=save_steps)


def _start(job_file, **kwargs):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.Popen([sys.executable, "-m", "pipelines.training.train", "--job", str(job_file)],
                            cwd=PROJECT_ROOT, env=env, start_new_session=True, **kwargs)


def test_standalone_run_writes_a_loadable_model_and_summary_and_logs_to_mlflow(
        tmp_path, micro_base, micro_problems):
    """Without Dagster (no Pipes to the step process), a job naming an MLflow run logs into it directly."""
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = make_client(tracking_uri)
    run_id = client.create_run(client.create_experiment("standalone")).info.run_id
    job = replace(_job(tmp_path, micro_base[0], micro_problems, steps=3, save_steps=0),
                  mlflow_tracking_uri=tracking_uri, mlflow_run_id=run_id)
    process = _start(job.save(tmp_path / "job.json"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    assert "step 3/3 loss" in output  # progress goes to stdout when no Dagster is listening
    summary = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())
    assert summary["steps"] == 3 and summary["resumed_from_step"] == 0
    AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2, 3]
    assert "system/rss_mb" in client.get_run(run_id).data.metrics


def test_periodic_checkpoints_are_kept_but_the_final_step_is_saved_only_as_the_model(
        tmp_path, micro_base, micro_problems):
    """The Trainer would checkpoint step 6 too; the finished model is saved right after, so it does not."""
    job = _job(tmp_path, micro_base[0], micro_problems, steps=6, save_steps=4)
    process = _start(job.save(tmp_path / "job.json"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    assert sorted(p.name for p in (tmp_path / "work").glob("checkpoint-*")) == ["checkpoint-4"]
    assert json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())["steps"] == 6
    AutoModelForCausalLM.from_pretrained(tmp_path / "out")


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path, micro_base, micro_problems):
    total_steps = 400
    job = _job(tmp_path, micro_base[0], micro_problems, steps=total_steps, save_steps=10)
    job_file = job.save(tmp_path / "job.json")
    process = _start(job_file, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + KILL_DEADLINE_S
    while latest_checkpoint(tmp_path / "work") is None:
        assert process.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    saved = int(latest_checkpoint(tmp_path / "work").name.split("-")[1])
    assert 0 < saved < total_steps and not (tmp_path / "out" / SUMMARY_FILE).exists()

    rerun = _start(job_file, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output[-3000:]
    summary = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())
    assert summary["resumed_from_step"] >= saved > 0
    assert summary["steps"] == total_steps
    assert f"resumed from step {summary['resumed_from_step']}" in output
    AutoModelForCausalLM.from_pretrained(tmp_path / "out")


def test_garbage_collection_is_back_on_when_training_starts():
    """The entrypoint runs its set-up with the collector off; training must not run without it."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from pipelines.training.callbacks import ResumeGarbageCollection

    frozen_before = gc.get_freeze_count()
    gc.disable()
    try:
        ResumeGarbageCollection().on_train_begin(TrainingArguments(output_dir="unused", use_cpu=True),
                                                 TrainerState(), TrainerControl())
        assert gc.isenabled() and gc.get_freeze_count() > frozen_before
    finally:
        gc.unfreeze()
        gc.enable()
