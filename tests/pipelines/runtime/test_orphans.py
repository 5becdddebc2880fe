"""A real training subprocess stops when the step process that launched it is killed with SIGKILL."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from pipelines.definitions import PROJECT_ROOT
from pipelines.runtime.orphans import PARENT_PID_ENV
from tests.pipelines.test_train_entrypoint import _job

pytestmark = pytest.mark.slow
TRAINER_EXIT_TIMEOUT_S = 30

# Stands in for the step process: launches the trainer as TrainingLauncher does, prints its pid, waits.
STEP = """
import os, subprocess, sys
env = {**os.environ, "PYTHONPATH": sys.argv[2], sys.argv[3]: str(os.getpid())}
trainer = subprocess.Popen([sys.executable, "-m", "pipelines.training.train", "--job", sys.argv[1]],
                           cwd=sys.argv[2], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(trainer.pid, flush=True)
trainer.wait()
"""


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _ignore_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@pytest.mark.parametrize("inherited_sigterm", ["default", "ignored"])
def test_the_trainer_dies_with_its_killed_step(tmp_path, micro_base, micro_problems, inherited_sigterm):
    """``ignored``: a launcher that ignores SIGTERM passes that on through exec; the trainer trained on after
    its step was killed (seen in a full test run) until die_with_parent restored the default action."""
    job = _job(tmp_path, micro_base[0], micro_problems, steps=100_000, save_steps=0)  # trains for hours
    step = subprocess.Popen([sys.executable, "-c", STEP, str(job.save(tmp_path / "job.json")), str(PROJECT_ROOT),
                             PARENT_PID_ENV], stdout=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_ignore_sigterm if inherited_sigterm == "ignored" else None)
    trainer = psutil.Process(int(step.stdout.readline()))
    try:
        deadline = time.monotonic() + 120
        while not any("pipelines.training.train" in part for part in trainer.cmdline()) or \
                trainer.cpu_times().user < 2:  # well into its imports or training
            assert time.monotonic() < deadline and trainer.is_running()
            time.sleep(0.5)
        os.kill(step.pid, signal.SIGKILL)
        step.wait()
        deadline = time.monotonic() + TRAINER_EXIT_TIMEOUT_S
        while _alive(trainer):  # dead means gone or a zombie: its new parent may be slow to reap it
            assert time.monotonic() < deadline, "the trainer trains on after its step was killed"
            time.sleep(0.5)
    finally:
        if _alive(trainer):
            trainer.kill()
