"""`make demo`: materialize the whole lineage through Dagster, then show what it produced.

Launches the run with Dagster's own CLI the way the UI's *Materialize all* does: ``dagster job launch -w
workspace.yaml -j __ASSET_JOB`` submits it to the instance's run queue from the same code location the UI loads,
so the run records where it came from and the UI can re-execute it (a ``dagster asset materialize`` run cannot:
it records no code location). The queue is served by ``dagster-daemon run``, started for the demo's duration
(it also runs the sensors and schedule, as ``make ui`` does). Runs against the persistent ``$DAGSTER_HOME`` (so
the runs show up in the UI afterwards), waits for the run, times it, and prints the evaluation report and where
the DuckDB file, MLflow store and checkpoints are.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
POLL_S = 2.0


def _cli(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def materialize(ops: list[str] | None = None) -> str:
    """Launch the whole lineage (or the steps ``ops``) through the instance's queue and wait for it; the run id.
    Raises SystemExit unless the run succeeds."""
    import dagster as dg

    run_id = str(uuid.uuid4())
    # Opened first: a fresh home's storage is created here once, not raced for by the daemon and the launch.
    with dg.DagsterInstance.get() as instance:
        daemon = subprocess.Popen([_cli("dagster-daemon"), "run", "-w", "workspace.yaml", "--log-level", "warning"],
                                  cwd=PROJECT_ROOT, start_new_session=True)  # its code server, run worker: one group
        try:
            launch = subprocess.Popen([_cli("dagster"), "job", "launch", "-w", "workspace.yaml", "-j", "__ASSET_JOB",
                                       "--run-id", run_id, *(["-o", ",".join(ops)] if ops else [])],
                                      cwd=PROJECT_ROOT)
            from pipelines.runtime.reaper import reap_dead_runs  # imported while the run is submitted

            for reaped in reap_dead_runs(instance):  # a killed earlier demo must not hold the gpu slot
                print(f"reaped run {reaped.run_id} left by a killed process (worker pid {reaped.worker_pid})")
            if launch.wait() != 0:
                raise SystemExit(f"dagster job launch failed with exit code {launch.returncode}")
            while not (run := instance.get_run_by_id(run_id)).is_finished:
                if daemon.poll() is not None:
                    raise SystemExit(f"dagster-daemon exited with code {daemon.returncode}; run {run_id} is "
                                     f"{run.status.value}")
                time.sleep(POLL_S)
        finally:
            try:
                os.killpg(daemon.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            daemon.wait()
    if run.status != dg.DagsterRunStatus.SUCCESS:
        raise SystemExit(f"run {run_id} ended {run.status.value} (see it in the UI: `make ui`)")
    return run_id


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    run_id = materialize()
    seconds = time.perf_counter() - started
    from pipelines.definitions import data_home, default_resources

    resources = default_resources()
    report = resources["checkpoints"].current("eval_report")
    print(f"\n=== llm-lineage demo (profile: {resources['profile'].name}) ===\n")
    print((report / "report.md").read_text())
    print(f"\nMaterialized the whole lineage in {seconds:.0f} s ({seconds / 60:.1f} min), run {run_id}.")
    print(f"Report:         {report / 'report.html'}")
    print(f"DuckDB tables:  {resources['duckdb'].path}")
    print(f"MLflow store:   {resources['mlflow'].tracking_uri}")
    print(f"Checkpoints:    {resources['checkpoints'].root}")
    print(f"Dagster home:   {os.environ.get('DAGSTER_HOME', '(temporary)')}")
    print(f"Browse both UIs with `make ui` (Dagster http://127.0.0.1:3000, MLflow http://127.0.0.1:5000); "
          f"data root {data_home()}")


if __name__ == "__main__":
    main()
