"""A training subprocess dies with the step process that started it.

Without this, ``kill -9`` of a step (or of a CLI run whose steps the reaper then kills) leaves its
trainer running as an orphan: it trains on, holds the accelerator and its memory, and writes into a
work directory nobody reads. Linux's ``PR_SET_PDEATHSIG`` asks the kernel to signal the child when its
parent dies; set in the child itself (no ``preexec_fn``, which is unsafe in a threaded parent).
Under ``accelerate launch`` each rank dies with the launcher process, which itself is not ours to
change: with N processes an orphaned launcher is what remains (the reaper kills whole process trees).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_PID_ENV = "LLM_LINEAGE_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Receive ``sig`` when the parent process dies; exit now if it already has (Linux; elsewhere a no-op).

    SIGTERM rather than SIGKILL, so that ``accelerate launch`` can stop its ranks in turn."""
    if not sys.platform.startswith("linux"):
        return
    # An ignored or blocked disposition survives exec: a launcher that ignores SIGTERM would make the death
    # signal a no-op here, so take the default action back before asking for it.
    signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return  # not fatal: only orphan clean-up is lost
    expected = os.environ.get(PARENT_PID_ENV)
    if expected and os.getppid() != int(expected):  # the parent died before the call above
        os._exit(128 + int(sig))
