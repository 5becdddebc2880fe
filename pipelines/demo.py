"""`make demo`: build what is stale in the lineage through Dagster, then show what it produced.

The run goes the way the UI's *Materialize changed and missing* does. The demo serves the code location
from one ``dagster code-server`` (named as ``make ui`` names workspace.yaml's entry, so the UI can
re-execute the run), records the raw-data folder's content hash as an observation of ``raw_data_files``,
asks Dagster which assets are stale or missing (``pipelines/runtime/staleness.py``), submits a run of just
those to the instance's run queue, and runs ``dagster-daemon run`` until the run ends. With nothing changed
nothing runs. ``--all`` builds every asset (each step still reuses what its fingerprint finds unchanged).
``--in-process`` runs ``dagster asset materialize`` instead: no daemon or code server beside the run, but
such a run records no code location, so the UI cannot re-execute it. Either way the demo waits for the
run, times it, and prints the evaluation report and where the DuckDB file, MLflow store and checkpoints are.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipelines.runtime.staleness import asset_statuses, launch_assets, to_build

PROJECT_ROOT = Path(__file__).resolve().parents[1]
POLL_S = 2.0
CODE_SERVER_START_S = 120
CODE_LOCATION = "pipelines.definitions"  # workspace.yaml's python_module entry has this name
# How long the code server and the daemon get to exit after SIGTERM before their process group is killed. A code
# server once sat in gRPC's wait_for_termination for minutes after SIGTERM, its run long finished (2026-12-02).
STOP_TIMEOUT_S = 15


def _cli(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _reap(instance) -> None:
    """A killed earlier demo must not hold the gpu slot."""
    from pipelines.runtime.reaper import reap_dead_runs

    for reaped in reap_dead_runs(instance):
        print(f"reaped run {reaped.run_id} left by a killed process (worker pid {reaped.worker_pid})")


def _observe_raw_folder(instance) -> None:
    """Record the raw-data folder's content hash as an observation of ``raw_data_files`` before asking what is
    stale: changed raw files then make the raw stage, and all that follows it, stale."""
    import dagster as dg

    from assets.raw import raw_data_files
    from pipelines.definitions import default_resources

    snapshot = default_resources()["raw_data"].snapshot()
    instance.report_runless_asset_event(dg.AssetObservation(
        asset_key=raw_data_files.key, tags={"dagster/data_version": snapshot.fingerprint},
        metadata={"files": len(snapshot.files), "observed_by": "make demo"}))


def _materialize_in_process(assets: list[str]) -> None:
    """``dagster asset materialize`` of ``assets``; raises SystemExit unless it succeeds."""
    run = subprocess.Popen([_cli("dagster"), "asset", "materialize", "--select", ",".join(assets),
                            "-m", "pipelines.definitions"], cwd=PROJECT_ROOT)
    if run.wait() != 0:
        raise SystemExit(f"dagster asset materialize failed with exit code {run.returncode}")


def _wait_for_code_server(server: subprocess.Popen, socket_path: Path) -> None:
    """Until ``dagster code-server start`` answers on its socket. One code server for the demo's duration: a
    ``python_module`` workspace entry would have the daemon restart its own every minute (~4 s of imports
    each) on the cores the training needs."""
    deadline = time.monotonic() + CODE_SERVER_START_S
    while subprocess.run([_cli("dagster"), "api", "grpc-health-check", "-s", str(socket_path)],
                         capture_output=True).returncode != 0:
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the code server did not start within {CODE_SERVER_START_S} s")
        time.sleep(POLL_S)


def _stop_group(process: subprocess.Popen, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM to the process's group (it was started in its own session), then SIGKILL after ``timeout_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=timeout_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _run_queued(instance, workspace: Path, assets: list[str]) -> str:
    """Submit ``assets`` to the run queue, let ``dagster-daemon run`` launch the run, wait; the run id.
    Raises SystemExit unless the run succeeds."""
    import dagster as dg

    daemon = subprocess.Popen([_cli("dagster-daemon"), "run", "-w", str(workspace), "--log-level", "warning"],
                              cwd=PROJECT_ROOT, start_new_session=True)
    try:
        run_id = launch_assets(workspace, CODE_LOCATION, assets, cwd=PROJECT_ROOT)
        while not (run := instance.get_run_by_id(run_id)).is_finished:
            if daemon.poll() is not None:
                raise SystemExit(f"dagster-daemon exited with code {daemon.returncode}; run {run_id} is "
                                 f"{run.status.value}")
            time.sleep(POLL_S)
    finally:
        _stop_group(daemon)
    if run.status != dg.DagsterRunStatus.SUCCESS:
        raise SystemExit(f"run {run_id} ended {run.status.value} (see it in the UI: `make ui`)")
    return run_id


def build(queued: bool = True, everything: bool = False,
          assets: list[str] | None = None) -> tuple[list[str], str | None]:
    """Materialize ``assets``, else every asset (``everything``), else those Dagster calls stale or missing.
    Returns what was selected and the queued run's id (None in-process or when nothing was selected)."""
    import dagster as dg

    # Opened first: a fresh home's storage is created here once, not raced for by the daemon and the launch.
    with dg.DagsterInstance.get() as instance, tempfile.TemporaryDirectory(prefix="llm-lineage-demo-") as scratch:
        workspace, server = PROJECT_ROOT / "workspace.yaml", None
        if queued:
            socket_path, workspace = Path(scratch, "code.sock"), Path(scratch, "workspace.yaml")
            # The name `make ui` gives workspace.yaml's location: the UI re-executes the run from there.
            workspace.write_text(f"load_from:\n  - grpc_server:\n      socket: {socket_path}\n"
                                 f"      location_name: {CODE_LOCATION}\n")
            server = subprocess.Popen([_cli("dagster"), "code-server", "start", "-m", "pipelines.definitions",
                                       "-s", str(socket_path), "--log-level", "warning"],
                                      cwd=PROJECT_ROOT, start_new_session=True)  # + its gRPC server, run worker
        try:
            _reap(instance)  # a killed earlier demo must not hold the gpu slot
            _observe_raw_folder(instance)  # meanwhile the code server loads
            if server is not None:
                _wait_for_code_server(server, socket_path)
            if assets is None:
                statuses = asset_statuses(workspace, cwd=PROJECT_ROOT)
                assets = sorted(statuses) if everything else to_build(statuses)
            if not assets:
                return [], None
            if queued:
                return assets, _run_queued(instance, workspace, assets)
            _materialize_in_process(assets)
            return assets, None
        finally:
            if server is not None:
                _stop_group(server)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="build every asset, not only the stale or missing "
                        "ones (unchanged steps still reuse their fingerprinted outputs)")
    parser.add_argument("--in-process", action="store_true", help="run `dagster asset materialize` in this "
                        "process's child: no daemon, but the UI cannot re-execute the run")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    built, run_id = build(queued=not args.in_process, everything=args.all)
    seconds = time.perf_counter() - started
    from pipelines.definitions import data_home, default_resources

    resources = default_resources()
    if not resources["checkpoints"].has_current("eval_report"):
        raise SystemExit("Dagster reports the lineage fresh but there is no evaluation report under "
                         f"{resources['checkpoints'].root}: files were removed; rebuild with `make demo DEMO_ARGS=--all`")
    report = resources["checkpoints"].current("eval_report")
    print(f"\n=== llm-lineage demo (profile: {resources['profile'].name}) ===\n")
    print((report / "report.md").read_text())
    if built:
        print(f"\nMaterialized {len(built)} stale or missing assets in {seconds:.0f} s ({seconds / 60:.1f} min)"
              + (f", run {run_id}." if run_id else "."))
    else:
        print(f"\nNothing changed: Dagster reports every asset fresh, so nothing ran ({seconds:.0f} s). "
              "`make demo DEMO_ARGS=--all` builds every asset again.")
    print(f"Report:         {report / 'report.html'}")
    print(f"DuckDB tables:  {resources['duckdb'].path}")
    print(f"MLflow store:   {resources['mlflow'].tracking_uri}")
    print(f"Checkpoints:    {resources['checkpoints'].root}")
    print(f"Dagster home:   {os.environ.get('DAGSTER_HOME', '(temporary)')}")
    print(f"Browse both UIs with `make ui` (Dagster http://127.0.0.1:3000, MLflow http://127.0.0.1:5000); "
          f"data root {data_home()}")


if __name__ == "__main__":
    main()
