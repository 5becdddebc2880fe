"""`make demo`: materialize the whole lineage through Dagster, then show what it produced.

By default runs ``dagster asset materialize --select '*'`` (Dagster's own CLI, in this process's child)
against the persistent ``$DAGSTER_HOME`` (so the runs show up in the UI afterwards). Such a run records no
code location, so the UI cannot re-execute it. ``--queued`` (``make demo DEMO_ARGS=--queued``) launches it
the way the UI's *Materialize all* does instead: ``dagster job launch -j __ASSET_JOB`` submits it to the
instance's run queue, and ``dagster-daemon run``, started for the demo's duration, launches it from a code
server (``dagster code-server start``) that serves the code location under the name ``make ui`` gives it,
so the UI can re-execute the run. Either way the demo waits for the run, times it, and prints the
evaluation report and where the DuckDB file, MLflow store and checkpoints are.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
POLL_S = 2.0
CODE_SERVER_START_S = 120
CODE_LOCATION = "pipelines.definitions"  # workspace.yaml's python_module entry has this name


def _cli(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _reap(instance) -> None:
    """A killed earlier demo must not hold the gpu slot."""
    from pipelines.runtime.reaper import reap_dead_runs

    for reaped in reap_dead_runs(instance):
        print(f"reaped run {reaped.run_id} left by a killed process (worker pid {reaped.worker_pid})")


def materialize_in_process() -> None:
    """The whole lineage through ``dagster asset materialize``; raises SystemExit unless it succeeds."""
    run = subprocess.Popen([_cli("dagster"), "asset", "materialize", "--select", "*", "-m", "pipelines.definitions"],
                           cwd=PROJECT_ROOT)
    # Imported while the run starts (it has a core of its own meanwhile), not after it.
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        _reap(instance)
    if run.wait() != 0:
        raise SystemExit(f"dagster asset materialize failed with exit code {run.returncode}")


def _serve_code_location(socket_path: Path) -> subprocess.Popen:
    """``dagster code-server start`` for the project's code location on a Unix socket, started once and
    answered from for the demo's duration. A ``python_module`` entry would have the daemon restart its own
    code server every minute (~4 s of imports each) for the whole run, on cores the training needs."""
    server = subprocess.Popen([_cli("dagster"), "code-server", "start", "-m", "pipelines.definitions",
                               "-s", str(socket_path), "--log-level", "warning"],
                              cwd=PROJECT_ROOT, start_new_session=True)  # its gRPC server and run worker: one group
    deadline = time.monotonic() + CODE_SERVER_START_S
    while subprocess.run([_cli("dagster"), "api", "grpc-health-check", "-s", str(socket_path)],
                         capture_output=True).returncode != 0:
        if server.poll() is not None or time.monotonic() > deadline:
            _stop_group(server)
            raise SystemExit(f"the code server did not start within {CODE_SERVER_START_S} s")
        time.sleep(POLL_S)
    return server


def _stop_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    process.wait()


def materialize_queued(ops: list[str] | None = None) -> str:
    """Launch the whole lineage (or the steps ``ops``) through the instance's queue and wait for it; the run id.
    Raises SystemExit unless the run succeeds."""
    import dagster as dg

    run_id = str(uuid.uuid4())
    # Opened first: a fresh home's storage is created here once, not raced for by the daemon and the launch.
    with dg.DagsterInstance.get() as instance, tempfile.TemporaryDirectory(prefix="llm-lineage-demo-") as scratch:
        socket_path, workspace = Path(scratch, "code.sock"), Path(scratch, "workspace.yaml")
        # The name `make ui` gives workspace.yaml's location: the UI re-executes the run from there.
        workspace.write_text(f"load_from:\n  - grpc_server:\n      socket: {socket_path}\n"
                             f"      location_name: {CODE_LOCATION}\n")
        server = _serve_code_location(socket_path)
        daemon = subprocess.Popen([_cli("dagster-daemon"), "run", "-w", str(workspace), "--log-level", "warning"],
                                  cwd=PROJECT_ROOT, start_new_session=True)
        try:
            launch = subprocess.Popen([_cli("dagster"), "job", "launch", "-w", str(workspace), "-j", "__ASSET_JOB",
                                       "--run-id", run_id, *(["-o", ",".join(ops)] if ops else [])],
                                      cwd=PROJECT_ROOT)
            _reap(instance)  # while the run is submitted
            if launch.wait() != 0:
                raise SystemExit(f"dagster job launch failed with exit code {launch.returncode}")
            while not (run := instance.get_run_by_id(run_id)).is_finished:
                if daemon.poll() is not None:
                    raise SystemExit(f"dagster-daemon exited with code {daemon.returncode}; run {run_id} is "
                                     f"{run.status.value}")
                time.sleep(POLL_S)
        finally:
            _stop_group(daemon)
            _stop_group(server)
    if run.status != dg.DagsterRunStatus.SUCCESS:
        raise SystemExit(f"run {run_id} ended {run.status.value} (see it in the UI: `make ui`)")
    return run_id


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--queued", action="store_true", help="launch through the run queue and a daemon, so "
                        "the UI can re-execute the run (slower on 2 cores)")
    queued = parser.parse_args(argv).queued
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    run_id = materialize_queued() if queued else materialize_in_process()
    seconds = time.perf_counter() - started
    from pipelines.definitions import data_home, default_resources

    resources = default_resources()
    report = resources["checkpoints"].current("eval_report")
    print(f"\n=== llm-lineage demo (profile: {resources['profile'].name}) ===\n")
    print((report / "report.md").read_text())
    print(f"\nMaterialized the whole lineage in {seconds:.0f} s ({seconds / 60:.1f} min)"
          + (f", run {run_id}." if run_id else "."))
    print(f"Report:         {report / 'report.html'}")
    print(f"DuckDB tables:  {resources['duckdb'].path}")
    print(f"MLflow store:   {resources['mlflow'].tracking_uri}")
    print(f"Checkpoints:    {resources['checkpoints'].root}")
    print(f"Dagster home:   {os.environ.get('DAGSTER_HOME', '(temporary)')}")
    print(f"Browse both UIs with `make ui` (Dagster http://127.0.0.1:3000, MLflow http://127.0.0.1:5000); "
          f"data root {data_home()}")


if __name__ == "__main__":
    main()
