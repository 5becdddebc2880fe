import multiprocessing

import pytest

from resources import MLflowTracking


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
    with pytest.raises(ValueError):
        with tracking.start_run("boom"):
            raise ValueError("training crashed")
    by_name = {r.info.run_name: r for r in tracking.runs()}
    assert by_name["ok"].info.status == "FINISHED" and by_name["ok"].data.params["lr"] == "0.1"
    assert by_name["ok"].data.tags["dagster.run_id"] == "abc"
    assert by_name["boom"].info.status == "FAILED"
    client = tracking.client()
    assert [a.path for a in client.list_artifacts(run.run_id)] == ["report.md"]
