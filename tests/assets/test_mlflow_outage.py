"""The MLflow server dies while base_checkpoint trains: the step fails naming the server, nothing is
published; after the server returns, a rerun resumes and its MLflow run holds every logged step."""

import signal
import threading
import time

import dagster as dg
import requests

from assets.checkpoints import base_checkpoint, tokenizer
from assets.datasets import eval_suites, raw_corpus, training_problems
from assets.raw import raw_problems
from pipelines.definitions import default_resources
from pipelines.profiles import SMOKE
from resources.checkpoint_store import CheckpointNotFound
from tests.conftest import _free_port, kill_process_group, start_mlflow_server

# Long enough that the server is killed well before training ends (the kill waits for the first logged
# step); short enough to keep the test quick on 2 cores.
MAX_STEPS = 40
POLL_S = 0.2
KILL_WAIT_S = 600


def _kill_after_first_logged_step(url: str, server, killed: threading.Event) -> None:
    """Kill the server (SIGKILL, its whole process group) once the training run has logged a loss."""
    deadline = time.monotonic() + KILL_WAIT_S
    while time.monotonic() < deadline:
        try:
            found = requests.post(f"{url}/api/2.0/mlflow/runs/search", timeout=5, json={
                "experiment_ids": ["0", "1"], "filter": "attributes.run_name = 'base_checkpoint'"}).json()
            if any(m["key"] == "pretrain/loss" for r in found.get("runs", []) for m in r["data"].get("metrics", [])):
                kill_process_group(server, signal.SIGKILL)
                killed.set()
                return
        except requests.RequestException:
            pass
        time.sleep(POLL_S)


def test_mlflow_server_killed_mid_training_then_rerun_completes(tmp_path, lineage_home):
    root, port = tmp_path / "mlflow", _free_port()
    root.mkdir()
    url = f"http://127.0.0.1:{port}"
    server = start_mlflow_server(root, port)
    try:
        resources = default_resources(lineage_home, profile="smoke", tracking_uri=url)
        assert dg.materialize([raw_problems, eval_suites, training_problems, raw_corpus, tokenizer], resources=resources).success
        run_config = {"ops": {"base_checkpoint": {"config": {"max_steps": MAX_STEPS}}}}
        killed = threading.Event()
        killer = threading.Thread(target=_kill_after_first_logged_step, args=(url, server, killed))
        killer.start()
        failed = dg.materialize([base_checkpoint], resources=resources, run_config=run_config,
                                raise_on_error=False)
        killer.join()
        assert killed.is_set() and not failed.success
        error = failed.get_step_failure_events()[0].step_failure_data.error
        message = (error.cause or error).message
        assert f"MLflow tracking store {url}" in message and "is the server up" in message, message
        try:
            resources["checkpoints"].current("base_checkpoint")
            raise AssertionError("a checkpoint was published although its metrics could not be logged")
        except CheckpointNotFound:
            pass

        server = start_mlflow_server(root, port)  # same port, same backend store
        rerun = dg.materialize([base_checkpoint], resources=resources, run_config=run_config)
        assert rerun.success
        metadata = rerun.asset_materializations_for_node("base_checkpoint")[0].metadata
        assert metadata["pretrain/resumed_from_step"].value > 0  # resumed, not restarted
        runs = resources["mlflow"].runs(f"tags.`dagster.run_id` = '{rerun.run_id}'")
        assert [r.info.status for r in runs] == ["FINISHED"]
        history = resources["mlflow"].client().get_metric_history(runs[0].info.run_id, "pretrain/loss")
        logging_steps = SMOKE.pretrain.logging_steps
        assert sorted(m.step for m in history) == list(range(logging_steps, MAX_STEPS + 1, logging_steps))
    finally:
        kill_process_group(server)
