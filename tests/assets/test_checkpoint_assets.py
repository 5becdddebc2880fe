"""Checkpoint assets through real Dagster runs: Pipes subprocess training, reuse, 2 processes, resume."""

import json
import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest

from assets.checkpoints import base_checkpoint, think_sft_checkpoint, tokenizer
from assets.datasets import (eval_suites, preference_dataset, raw_corpus, sft_dataset, think_dataset,
                             training_problems)
from assets.raw import raw_problems, raw_training_data
from pipelines.definitions import PROJECT_ROOT, default_resources
from pipelines.profiles import SMOKE
from pipelines.training.recipes import latest_checkpoint
from resources import TrainingLauncher

UPSTREAM = [raw_problems, raw_training_data, eval_suites, training_problems, raw_corpus, sft_dataset, think_dataset,
            tokenizer]


@pytest.fixture(scope="module")
def lineage(tmp_path_factory):
    home = tmp_path_factory.mktemp("checkpoint_assets")
    resources = default_resources(home, profile="smoke", tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    instance = dg.DagsterInstance.ephemeral()
    upstream = dg.materialize(UPSTREAM, resources=resources, instance=instance)
    assert upstream.success
    first = dg.materialize([base_checkpoint], resources=resources, instance=instance)
    assert first.success
    return home, resources, instance, first


def _metadata(result, name):
    return {k: v.value for k, v in result.asset_materializations_for_node(name)[-1].metadata.items()}


def _messages(instance, result) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(result.run_id)]


def _runs_for(resources, asset):
    return resources["mlflow"].runs(f"tags.`dagster.asset_key` = '{asset}'")


def test_pipes_streams_progress_logs_and_summary_metadata(lineage):
    _, resources, instance, first = lineage
    steps = SMOKE.pretrain.max_steps
    assert any(f"step {steps}/{steps} loss" in message for message in _messages(instance, first))
    metadata = _metadata(first, "base_checkpoint")
    assert metadata["pretrain/steps"] == steps and metadata["pretrain/processes"] == 1
    assert metadata["reused"] is False
    assert metadata["loss_curve"].startswith("![base_checkpoint loss](data:image/png;base64,")
    [run] = _runs_for(resources, "base_checkpoint")
    history = resources["mlflow"].client().get_metric_history(run.info.run_id, "pretrain/loss")
    assert [m.step for m in history] == list(range(SMOKE.pretrain.logging_steps, steps + 1, SMOKE.pretrain.logging_steps))
    assert "system/rss_mb" in run.data.metrics
    artifacts = [a.path for a in resources["mlflow"].client().list_artifacts(run.info.run_id)]
    assert "loss_curve.png" in artifacts


def test_unchanged_inputs_reuse_the_checkpoint_and_a_config_change_retrains(lineage):
    home, resources, instance, first = lineage
    current = resources["checkpoints"].current("base_checkpoint")
    again = dg.materialize([base_checkpoint], resources=resources, instance=instance)
    reused, built = _metadata(again, "base_checkpoint"), _metadata(first, "base_checkpoint")
    assert reused["reused"] is True
    # the reused page repeats what the build showed: loss curve, step metrics, the MLflow link
    for name in ("loss_curve", "pretrain/steps", "pretrain/final_loss", "mlflow_run", "params"):
        assert reused[name] == built[name], name
    assert any("reusing" in m and "instead of retraining" in m for m in _messages(instance, again))
    assert resources["checkpoints"].current("base_checkpoint") == current
    assert len(_runs_for(resources, "base_checkpoint")) == 1  # nothing trained, nothing logged

    changed = dg.materialize([base_checkpoint], resources=resources, instance=instance,
                             run_config={"ops": {"base_checkpoint": {"config": {"max_steps": 4}}}})
    metadata = _metadata(changed, "base_checkpoint")
    assert metadata["reused"] is False and metadata["fingerprint"] != _metadata(first, "base_checkpoint")["fingerprint"]
    assert len(list((home / "checkpoints" / "base_checkpoint" / "versions").iterdir())) == 2
    lineage_record = json.loads((resources["checkpoints"].current("base_checkpoint") / "lineage.json").read_text())
    assert lineage_record["stages"][0]["input_versions"]["tokenizer"]
    assert lineage_record["dagster_run_id"] == changed.run_id


def test_two_process_data_parallel_sft_through_the_launcher(lineage):
    _, resources, instance, _ = lineage
    two = {**resources, "launcher": TrainingLauncher(work_root=resources["launcher"].work_root, num_processes=2)}
    result = dg.materialize([think_sft_checkpoint], resources=two, instance=instance)
    metadata = _metadata(result, "think_sft_checkpoint")
    assert metadata["think_sft/processes"] == 2 and metadata["think_sft/steps"] == SMOKE.think_sft.max_steps
    # the process count changes the global batch: one process trains its own checkpoint, not the 2-process one
    one = _metadata(dg.materialize([think_sft_checkpoint], resources=resources, instance=instance),
                    "think_sft_checkpoint")
    assert one["reused"] is False and one["think_sft/processes"] == 1 and one["fingerprint"] != metadata["fingerprint"]


def test_on_policy_preferences_account_for_every_sample(lineage):
    _, resources, instance, _ = lineage
    dg.materialize([think_sft_checkpoint], resources=resources, instance=instance)
    config = {"source": "both", "on_policy_prompts": 6, "samples_per_prompt": 3, "max_new_tokens": 24}
    result = dg.materialize([preference_dataset], resources=resources, instance=instance,
                            run_config={"ops": {"preference_dataset": {"config": config}}})
    metadata = _metadata(result, "preference_dataset")
    assert metadata["on_policy_samples"] == 18
    rows = resources["duckdb"].rows("preference_dataset")
    by_source = {s: sum(r["source"] == s for r in rows) for s in ("synthetic", "on_policy")}
    assert by_source["on_policy"] == metadata["on_policy_pairs"] <= 6
    assert by_source["synthetic"] == resources["duckdb"].count("think_dataset")
    assert resources["duckdb"].count("on_policy_traces") <= metadata["on_policy_correct"]


def test_killed_training_resumes_when_the_asset_is_materialized_again(lineage, tmp_path):
    home, resources, instance, _ = lineage
    config = {"ops": {"base_checkpoint": {"config": {"max_steps": 400}}}}
    env = {**os.environ, "LLM_LINEAGE_HOME": str(home), "LLM_LINEAGE_PROFILE": "smoke",
           "MLFLOW_TRACKING_URI": resources["mlflow"].tracking_uri, "DAGSTER_HOME": str(tmp_path)}
    process = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "dagster"), "asset", "materialize", "--select",
         "base_checkpoint", "-m", "pipelines.definitions", "--config-json", json.dumps(config)],
        cwd=PROJECT_ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = home / "work" / "base_checkpoint"
    deadline = time.monotonic() + 300
    while not any(latest_checkpoint(d) for d in work.glob("*/pretrain")):
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)  # the Dagster CLI, its step process and the training process
    process.wait()

    result = dg.materialize([base_checkpoint], resources=resources, instance=instance, run_config=config)
    metadata = _metadata(result, "base_checkpoint")
    assert metadata["pretrain/resumed_from_step"] > 0 and metadata["pretrain/steps"] == 400
    assert not list(work.glob("*/pretrain"))  # resume state is cleaned up once published
