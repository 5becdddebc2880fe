"""A code location for the reaper tests: one asset that takes the ``gpu`` pool slot and keeps it.

It writes its step process's pid, starts a child process (as a training step starts its Pipes
subprocess) and sleeps for ``GPU_HOLDER_SLEEP_S`` seconds. The sensor requests it once, so that a
daemon launches it (as the lineage's sensors and automation do)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg


@dg.asset(pool="gpu")
def gpu_holder() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path(os.environ["GPU_HOLDER_PIDS"]).write_text(f"{os.getpid()} {child.pid}")
    time.sleep(float(os.environ.get("GPU_HOLDER_SLEEP_S", "0")))
    child.kill()


@dg.sensor(target=[gpu_holder], minimum_interval_seconds=1, default_status=dg.DefaultSensorStatus.RUNNING)
def request_gpu_holder_once():
    return dg.RunRequest(run_key="once")


defs = dg.Definitions(assets=[gpu_holder], sensors=[request_gpu_holder_once])
