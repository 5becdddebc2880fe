"""Runs whose worker died (``kill -9``, OOM) are failed, their step processes killed, their slots freed.

Dagster's run monitoring checks run workers only for runs started by a run launcher; a run started by
``dagster asset materialize`` (``make demo``) *is* the CLI process. Killed, it leaves the run STARTED
for ever: its ``gpu`` pool slot stays claimed, so every later model step waits ("still blocked by
limit for pool gpu"), and its orphaned step process trains on, publishes and holds its memory.

A run's worker is the process that emitted its RUN_START event (Dagster records each event's pid). A
run still STARTED/CANCELING whose worker process is gone (or is a newer process that reused the pid)
is dead: its step processes (and their training subprocesses) are killed, the run is reported failed
and its concurrency slots are freed, the same call Dagster's run monitoring makes for ended runs.
Unfinished MLflow runs of a reaped run are closed by ``MLflowTracking`` on its next start.

It runs as the ``dead_run_reaper`` sensor (in the daemon, ``make ui``), before ``make demo``'s run,
and by hand: ``python -m pipelines.runtime.reaper``. Pids are only meaningful on one host, so this is
for single-host instances (the default); a cluster relies on its run launcher's worker health checks.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field

import dagster as dg
import psutil

ACTIVE_STATUSES = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
# A process that started this much after the event that named its pid is a different process.
PID_REUSE_SLACK_S = 1.0


@dataclass
class ReapedRun:
    run_id: str
    worker_pid: int
    killed_pids: list[int] = field(default_factory=list)


def _process_from(pid: int | None, since: float) -> psutil.Process | None:
    """The live process ``pid`` if it already existed at time ``since`` (so it is the one that was logged)."""
    if pid is None:
        return None
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE or process.create_time() > since + PID_REUSE_SLACK_S:
            return None
        return process
    except psutil.Error:
        return None


def _kill_tree(process: psutil.Process) -> list[int]:
    try:
        tree = [*process.children(recursive=True), process]
    except psutil.Error:
        return []
    killed = []
    for member in tree:
        try:
            member.send_signal(signal.SIGKILL)
            killed.append(member.pid)
        except psutil.Error:
            pass
    psutil.wait_procs(tree, timeout=10)
    return killed


def reap_dead_runs(instance: dg.DagsterInstance, logger: logging.Logger | None = None) -> list[ReapedRun]:
    """Fail every active run whose worker process is gone; return what was reaped."""
    logger = logger or logging.getLogger(__name__)
    reaped = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=ACTIVE_STATUSES)):
        run = record.dagster_run
        starts = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_START)
        if not starts or starts[0].dagster_event is None:
            continue  # not started yet: run monitoring's start timeout covers STARTING runs
        start = starts[0]
        if _process_from(start.dagster_event.pid, start.timestamp) is not None:
            continue  # the worker is alive
        dead = ReapedRun(run.run_id, start.dagster_event.pid)
        for step in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START):
            orphan = _process_from(step.dagster_event.pid if step.dagster_event else None, step.timestamp)
            if orphan is not None and orphan.pid != dead.worker_pid:
                dead.killed_pids += _kill_tree(orphan)
        instance.report_run_failed(run, message=(
            f"run worker (pid {dead.worker_pid}) is gone (killed or crashed) while the run was {run.status.value}; "
            f"reaped: {len(dead.killed_pids)} orphaned step processes killed, pool slots freed"))
        # what Dagster's run monitoring does for ended runs (dagster/_daemon/monitoring/concurrency.py)
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        logger.warning(f"reaped run {run.run_id}: worker pid {dead.worker_pid} gone, killed {dead.killed_pids}")
        reaped.append(dead)
    return reaped


def main() -> None:
    """``python -m pipelines.runtime.reaper``: reap the instance at $DAGSTER_HOME once."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with dg.DagsterInstance.get() as instance:
        reaped = reap_dead_runs(instance)
    print(f"reaped {len(reaped)} dead runs" + "".join(f"\n  {r.run_id} (worker pid {r.worker_pid}, killed "
                                                    f"{r.killed_pids or 'no'} step processes)" for r in reaped))


if __name__ == "__main__":
    main()
