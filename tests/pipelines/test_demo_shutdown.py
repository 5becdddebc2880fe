"""The demo stops its code server and daemon even when they do not exit on SIGTERM (pipelines/demo.py)."""

import os
import subprocess
import sys
import time

from pipelines import demo

IGNORES_SIGTERM = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                   "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
                   "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)']); print('ready', flush=True); "
                   "time.sleep(600)")


def test_a_group_that_ignores_sigterm_is_killed_after_the_timeout():
    """A server and its child, both ignoring SIGTERM (as a code server waiting in gRPC's termination did):
    the stop returns after the timeout and neither process is left."""
    process = subprocess.Popen([sys.executable, "-c", IGNORES_SIGTERM], start_new_session=True, stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline().strip() == "ready"
    started = time.monotonic()
    demo._stop_group(process, timeout_s=1)
    assert process.returncode is not None
    assert time.monotonic() - started < 30
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the child, in the same group, is gone too
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("a process of the stopped group is still running")
