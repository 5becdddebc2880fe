"""``kill -9`` of a run's process releases what the run held: its pool slot, its orphaned step process
(and that step's own subprocess), its RUNNING status. Real ``dagster asset materialize`` processes on a
real instance with the project's ``dagster.yaml`` (gpu pool limit 1)."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest

from pipelines.automation import dead_run_reaper
from pipelines.definitions import PROJECT_ROOT

pytestmark = pytest.mark.slow
STEP_START_TIMEOUT_S = 180
SECOND_RUN_TIMEOUT_S = 180


@pytest.fixture
def dagster_home(tmp_path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def _materialize(home: Path, pids_file: Path, sleep_s: float) -> subprocess.Popen:
    env = {**os.environ, "DAGSTER_HOME": str(home), "GPU_HOLDER_PIDS": str(pids_file),
           "GPU_HOLDER_SLEEP_S": str(sleep_s)}
    return subprocess.Popen([str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "--select",
                             "gpu_holder", "-m", "tests.pipelines.runtime.gpu_holder_location"],
                            cwd=PROJECT_ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _step_pids(pids_file: Path, cli: subprocess.Popen) -> tuple[int, int]:
    deadline = time.monotonic() + STEP_START_TIMEOUT_S
    while not pids_file.exists() or len(pids_file.read_text().split()) < 2:
        assert cli.poll() is None, "the CLI run ended before its step started"
        assert time.monotonic() < deadline, "the step did not start"
        time.sleep(0.2)
    step, child = map(int, pids_file.read_text().split())
    return step, child


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _only_run(instance: dg.DagsterInstance) -> dg.DagsterRun:
    [run] = instance.get_runs()
    return run


def _second_run_finishes(home: Path, tmp_path: Path) -> None:
    """A new run of the gpu-pool step gets the slot (before the fix it waited for ever)."""
    second = _materialize(home, tmp_path / "second.pids", sleep_s=0)
    try:
        assert second.wait(timeout=SECOND_RUN_TIMEOUT_S) == 0
    except subprocess.TimeoutExpired:
        pytest.fail(f"the second run was still blocked on the gpu pool after {SECOND_RUN_TIMEOUT_S}s")
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)


def test_kill_9_of_the_cli_is_reaped_and_frees_the_gpu_slot(dagster_home, tmp_path):
    pids_file = tmp_path / "first.pids"
    cli = _materialize(dagster_home, pids_file, sleep_s=600)
    step, child = _step_pids(pids_file, cli)
    os.kill(cli.pid, signal.SIGKILL)  # the CLI alone, as `kill -9 <pid>` does; its step lives on
    cli.wait()
    try:
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            assert _only_run(instance).status == dg.DagsterRunStatus.STARTED and _alive(step) and _alive(child)

            # the daemon's sensor (or `python -m pipelines.runtime.reaper`, or the next `make demo`)
            skip = dead_run_reaper(dg.build_sensor_context(instance=instance))
            assert "reaped 1 dead runs" in skip.skip_message
            run = _only_run(instance)
            assert run.status == dg.DagsterRunStatus.FAILURE
            assert not _alive(step) and not _alive(child)  # the orphaned step and its subprocess are gone
            failure = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
            assert f"pid {cli.pid}" in failure[0].dagster_event.message

            again = dead_run_reaper(dg.build_sensor_context(instance=instance))  # nothing left to reap
            assert again.skip_message == "every active run has a live worker"
        _second_run_finishes(dagster_home, tmp_path)
    finally:
        for pid in (step, child):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_kill_9_of_a_step_fails_the_run_and_frees_the_gpu_slot(dagster_home, tmp_path):
    """Dagster's own multiprocess executor handles this one; the test keeps it that way."""
    pids_file = tmp_path / "first.pids"
    cli = _materialize(dagster_home, pids_file, sleep_s=600)
    step, child = _step_pids(pids_file, cli)
    os.kill(step, signal.SIGKILL)
    try:
        assert cli.wait(timeout=120) != 0
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            assert _only_run(instance).status == dg.DagsterRunStatus.FAILURE
        _second_run_finishes(dagster_home, tmp_path)
    finally:
        for pid in (cli.pid, child):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_kill_9_of_the_daemon_leaves_its_runs_to_finish_and_release_the_slot(dagster_home, tmp_path):
    """The daemon launches runs into their own worker processes: killing it stops no run and holds no
    slot. Its sensor launches one; the daemon is killed mid-step; the run still ends and frees the slot."""
    pids_file = tmp_path / "daemon.pids"
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "GPU_HOLDER_PIDS": str(pids_file),
           "GPU_HOLDER_SLEEP_S": "20"}
    daemon = subprocess.Popen([str(Path(sys.executable).with_name("dagster-daemon")), "run", "-m",
                               "tests.pipelines.runtime.gpu_holder_location"], cwd=PROJECT_ROOT, env=env,
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    survivors: list[psutil.Process] = []
    try:
        step, child = _step_pids(pids_file, daemon)
        survivors = psutil.Process(daemon.pid).children(recursive=True)  # code server, run worker, step
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.wait()
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            deadline = time.monotonic() + SECOND_RUN_TIMEOUT_S
            while _only_run(instance).status not in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE):
                assert time.monotonic() < deadline, "the daemon-launched run never ended"
                time.sleep(1)
            assert _only_run(instance).status == dg.DagsterRunStatus.SUCCESS
            assert not dead_run_reaper(dg.build_sensor_context(instance=instance)).skip_message.startswith("reaped")
        assert not _alive(step) and not _alive(child)
        _second_run_finishes(dagster_home, tmp_path)
    finally:
        for process in [*survivors]:
            if _alive(process.pid):
                process.kill()
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGKILL)
