import json
import multiprocessing
import os
import signal
import subprocess
import sys

import dagster as dg
import pytest

from pipelines.tracking import PROCESS_TAG
from resources import MLflowTracking
from resources.mlflow_tracking import CLOSED_TAG, INSTANCE_TAG
from tests.conftest import REPO_ROOT


def _log_runs(tracking_uri: str, artifact_root: str, worker: int, runs: int) -> None:
    tracking = MLflowTracking(tracking_uri=tracking_uri, artifact_root=artifact_root)
    for i in range(runs):
        with tracking.start_run(f"w{worker}-{i}", tags={"worker": str(worker)}) as run:
            run.log_params({"i": i})
            run.log_metrics({"loss": 1.0 / (i + 1)})
            run.log_metric_history("curve", [(step, float(step)) for step in range(5)])


def test_default_sqlite_store_takes_parallel_writers_without_lock_errors(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    artifacts = str(tmp_path / "artifacts")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_log_runs, args=(uri, artifacts, w, 3)) for w in range(3)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=300)
    assert [p.exitcode for p in workers] == [0, 0, 0]
    runs = MLflowTracking(tracking_uri=uri).runs()
    assert len(runs) == 9
    assert all(r.info.status == "FINISHED" and r.data.metrics["curve"] == 4.0 for r in runs)


def test_runs_on_a_real_tracking_server_are_closed_and_linked(mlflow_server):
    tracking = MLflowTracking(tracking_uri=mlflow_server, experiment_name="resource-test", ui_url=mlflow_server)
    with tracking.start_run("ok", tags={"dagster.run_id": "abc"}) as run:
        run.log_params({"lr": 0.1})
        run.log_metrics({"accuracy": 0.5})
        run.log_text("# report", "report.md")
    assert run.url.startswith(mlflow_server) and run.run_id in run.url
    assert run.url.endswith("?workflowType=machine_learning")  # the run page, not MLflow 3's GenAI view
    with pytest.raises(ValueError):
        with tracking.start_run("boom"):
            raise ValueError("training crashed")
    by_name = {r.info.run_name: r for r in tracking.runs()}
    assert by_name["ok"].info.status == "FINISHED" and by_name["ok"].data.params["lr"] == "0.1"
    assert by_name["ok"].data.tags["dagster.run_id"] == "abc"
    assert by_name["boom"].info.status == "FAILED"
    client = tracking.client()
    assert [a.path for a in client.list_artifacts(run.run_id)] == ["report.md"]


# A full disk, for real but without filling the machine's: RLIMIT_FSIZE=0 makes the kernel refuse every
# write that would grow a file (EFBIG, with SIGXFSZ ignored) while existing bytes stay readable -- what a
# full disk does. SQLite then fails MLflow's own writes with "disk I/O error" (its journal cannot grow),
# and artifact writes fail in Python. (PRAGMA max_page_count would only limit a connection we open
# ourselves, not MLflow's engine; a tmpfs needs root and a mount.)
FULL_DISK = """
import json, resource, signal, sys
from pathlib import Path
from resources import MLflowTracking

root = Path(sys.argv[1])
tracking = MLflowTracking(tracking_uri=f"sqlite:///{root / 'mlflow.db'}", artifact_root=str(root / "artifacts"))
with tracking.start_run("before") as run:
    run.log_metrics({"loss": 1.0})
open_run = tracking.start_run("open")
logger = open_run.__enter__()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
errors = {}
for name, action in (("log_metrics", lambda: logger.log_metric_points([("m", i, 1.0) for i in range(1000)])),
                     ("log_text", lambda: logger.log_text("x" * 10000, "report.md")),
                     ("start_run", lambda: tracking.start_run("after").__enter__())):
    try:
        action()
        errors[name] = None
    except Exception as error:
        errors[name] = [type(error).__name__, str(error)]
print(json.dumps(errors))
"""


@pytest.mark.slow  # a subprocess creating an MLflow store
def test_a_full_disk_is_reported_as_a_full_disk_naming_the_place(tmp_path):
    completed = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path)], capture_output=True, text=True,
                               timeout=300, cwd=REPO_ROOT)
    assert completed.returncode == 0, completed.stderr[-3000:]
    errors = json.loads(completed.stdout.strip().splitlines()[-1])
    assert set(errors) == {"log_metrics", "log_text", "start_run"} and all(errors.values()), errors
    for name, (kind, message) in errors.items():
        assert kind == "TrackingStoreFull", (name, kind, message)
        assert "is full (or unwritable)" in message and "server up" not in message, (name, message)
    assert f"the disk holding {tmp_path / 'mlflow.db'} is full" in errors["start_run"][1]
    assert f"the disk holding {tmp_path / 'mlflow.db'} is full" in errors["log_metrics"][1]
    assert "the disk holding the temporary directory (TMPDIR) is full" in errors["log_text"][1]  # staged there


OPEN_A_RUN_AND_WAIT = """
import sys, time
from resources import MLflowTracking

with MLflowTracking(tracking_uri=sys.argv[1]).start_run(sys.argv[2]) as run:
    print(run.run_id, flush=True)
    time.sleep(600)
"""


def _process_with_an_open_run(tracking_uri: str, name: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-c", OPEN_A_RUN_AND_WAIT, tracking_uri, name], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return process, process.stdout.readline().strip()


@pytest.mark.slow  # two subprocesses with MLflow runs
def test_a_run_whose_process_was_killed_is_closed_by_the_next_start(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    killed, killed_run = _process_with_an_open_run(uri, "killed")
    alive, alive_run = _process_with_an_open_run(uri, "alive")
    try:
        assert killed_run and alive_run
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=60)
        tracking = MLflowTracking(tracking_uri=uri)
        assert tracking.client().get_run(killed_run).info.status == "RUNNING"  # what kill -9 leaves
        with tracking.start_run("next"):
            pass
        client = tracking.client()
        closed = client.get_run(killed_run)
        assert closed.info.status == "KILLED"
        assert f":{killed.pid}:" in closed.data.tags[CLOSED_TAG] and "ended without closing" in closed.data.tags[CLOSED_TAG]
        assert client.get_run(alive_run).info.status == "RUNNING"  # its process still runs: not ours to close
    finally:
        alive.kill()
        alive.wait(timeout=60)
        killed.stdout.close()
        alive.stdout.close()


def test_runs_from_elsewhere_are_judged_by_their_dagster_run(tmp_path, mlflow_server):
    """A run opened on another host (a pod): closed when its Dagster run has ended or this instance no
    longer has it; left alone when its Dagster run is in progress or belongs to another instance."""
    tracking = MLflowTracking(tracking_uri=mlflow_server, experiment_name="interrupted-runs")

    @dg.asset
    def tracked(context: dg.AssetExecutionContext, mlflow: MLflowTracking) -> None:
        with mlflow.start_run("tracked", tags=mlflow.dagster_tags(context)):
            pass

    instance = dg.DagsterInstance.ephemeral()
    ended = dg.materialize([tracked], resources={"mlflow": tracking}, instance=instance)
    in_progress = instance.create_run_for_job(ended.job_def, status=dg.DagsterRunStatus.STARTED)
    client = tracking.client()
    experiment_id = tracking.experiment_id(client)
    elsewhere = {PROCESS_TAG: "another-host:4242:0.00"}

    def open_run(dagster_run_id: str, recorded_by: str) -> str:
        tags = elsewhere | {"dagster.run_id": dagster_run_id, INSTANCE_TAG: recorded_by}
        return client.create_run(experiment_id, tags=tags).info.run_id

    ours = instance.root_directory
    runs = {"ended": open_run(ended.run_id, ours), "gone": open_run("0" * 36, ours),
            "in_progress": open_run(in_progress.run_id, ours), "other_instance": open_run("1" * 36, "/elsewhere")}
    assert dg.materialize([tracked], resources={"mlflow": tracking}, instance=instance).success
    status = {name: client.get_run(run_id) for name, run_id in runs.items()}
    assert {name: run.info.status for name, run in status.items()} == {
        "ended": "KILLED", "gone": "KILLED", "in_progress": "RUNNING", "other_instance": "RUNNING"}
    assert status["ended"].data.tags[CLOSED_TAG] == f"its Dagster run {ended.run_id} ended SUCCESS"
    assert status["gone"].data.tags[CLOSED_TAG] == f"its Dagster run {'0' * 36} no longer exists"


@pytest.mark.parametrize("dagster_ui_url", ["http://dagster.example:3000/", ""])
def test_a_steps_run_links_back_to_its_dagster_run_and_asset(mlflow_server, dagster_ui_url):
    """Tags name the Dagster run and asset and, when the Dagster UI's address is known, link to their
    pages; the run's description (what MLflow's run page shows) has the same links."""
    tracking = MLflowTracking(tracking_uri=mlflow_server, experiment_name="links-back", dagster_ui_url=dagster_ui_url)

    @dg.asset(key=["group", "tracked"])
    def tracked(context: dg.AssetExecutionContext, mlflow: MLflowTracking) -> None:
        with mlflow.start_run("tracked", tags=mlflow.dagster_tags(context)):
            pass

    result = dg.materialize([tracked], resources={"mlflow": tracking})
    [run] = tracking.runs(f"tags.`dagster.run_id` = '{result.run_id}'")
    tags, note = run.data.tags, run.data.tags["mlflow.note.content"]
    assert tags["dagster.asset_key"] == "group/tracked"
    if dagster_ui_url:
        assert tags["dagster.run_url"] == f"http://dagster.example:3000/runs/{result.run_id}"
        assert tags["dagster.asset_url"] == "http://dagster.example:3000/assets/group/tracked"
        assert note == (f"Materialization of Dagster asset [`group/tracked`](http://dagster.example:3000/assets/group/"
                        f"tracked) in Dagster run [`{result.run_id}`](http://dagster.example:3000/runs/{result.run_id}).")
    else:
        assert "dagster.run_url" not in tags and "dagster.asset_url" not in tags
        assert note == f"Materialization of Dagster asset `group/tracked` in Dagster run `{result.run_id}`."
