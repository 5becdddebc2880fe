"""`make demo`: materialize the whole lineage through Dagster, then show what it produced.

Runs ``dagster asset materialize --select '*'`` (Dagster's own CLI) against the persistent ``$DAGSTER_HOME`` (so the runs
show up in the UI afterwards), times it, and prints the evaluation report and where the DuckDB file,
MLflow store and checkpoints are.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    command = [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "--select", "*",
               "-m", "pipelines.definitions"]
    run = subprocess.Popen(command, cwd=PROJECT_ROOT)
    # Imported while the run starts (it has a core of its own meanwhile), not after it: ~2 s saved.
    from pipelines.definitions import data_home, default_resources
    from pipelines.runtime.reaper import reap_dead_runs
    import dagster as dg

    with dg.DagsterInstance.get() as instance:  # a killed earlier demo must not hold the gpu slot
        for reaped in reap_dead_runs(instance):
            print(f"reaped run {reaped.run_id} left by a killed process (worker pid {reaped.worker_pid})")

    if run.wait() != 0:
        raise SystemExit(f"dagster asset materialize failed with exit code {run.returncode}")
    seconds = time.perf_counter() - started
    resources = default_resources()
    report = resources["checkpoints"].current("eval_report")
    print(f"\n=== llm-lineage demo (profile: {resources['profile'].name}) ===\n")
    print((report / "report.md").read_text())
    print(f"\nMaterialized the whole lineage in {seconds:.0f} s ({seconds / 60:.1f} min).")
    print(f"Report:         {report / 'report.html'}")
    print(f"DuckDB tables:  {resources['duckdb'].path}")
    print(f"MLflow store:   {resources['mlflow'].tracking_uri}")
    print(f"Checkpoints:    {resources['checkpoints'].root}")
    print(f"Dagster home:   {os.environ.get('DAGSTER_HOME', '(temporary)')}")
    print(f"Browse both UIs with `make ui` (Dagster http://127.0.0.1:3000, MLflow http://127.0.0.1:5000); "
          f"data root {data_home()}")


if __name__ == "__main__":
    main()
