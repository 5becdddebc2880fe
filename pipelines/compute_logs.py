"""Step stdout/stderr capture for the instance (``compute_logs`` in ``dagster.yaml``): Dagster's local
capture, with the copy to the terminal done by a thread instead of four processes per step.

``LocalComputeLogManager`` points a step's stdout and stderr at files (what the UI shows) and, so
the terminal still sees them, starts ``tail -F`` on each file plus a watcher Python process per
tail. On an unchanged re-run of the lineage (26 steps of ~0.5 s) that is about 90 ms per step:
alternated re-runs took 15.3-16.0 s with it and 12.7-14.1 s with no capture at all. Here each
stream's file descriptor is pointed at a pipe; a reader thread appends what arrives to the same
file and writes it to the original stream. Reading the files (UI, log subscriptions) is Dagster's
own code, unchanged. Output of subprocesses the step starts (a training job) goes through the pipe
too, as it went to the file before.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Generator, Sequence
from contextlib import contextmanager
from typing import IO

import dagster as dg
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.local_compute_log_manager import IO_TYPE_EXTENSION, LocalComputeLogManager
from dagster._serdes import ConfigurableClassData
from dagster._utils import ensure_file, touch_file

READ_CHUNK_BYTES = 1 << 16
DRAIN_TIMEOUT_S = 10.0  # a process the step started may outlive it holding the pipe; do not wait on it


class TeeComputeLogManager(LocalComputeLogManager):
    """``LocalComputeLogManager`` (same files, same reading side) with an in-process terminal copy.

    ``base_dir`` defaults to ``$DAGSTER_HOME/storage``, where Dagster keeps compute logs by default,
    read when logs are first written or read (an instance that only reads events needs no home).
    """

    def __init__(self, base_dir: str | None = None, polling_timeout: float | None = None,
                 inst_data: ConfigurableClassData | None = None):
        super().__init__(base_dir or "", polling_timeout, inst_data)

    @property
    def _base_dir(self) -> str:
        if self._configured_base_dir:
            return self._configured_base_dir
        if not os.environ.get("DAGSTER_HOME"):
            raise ValueError("compute_logs: TeeComputeLogManager needs base_dir or DAGSTER_HOME")
        return os.path.join(os.environ["DAGSTER_HOME"], "storage")

    @_base_dir.setter
    def _base_dir(self, value: str) -> None:  # what LocalComputeLogManager.__init__ assigns
        self._configured_base_dir = value

    @classmethod
    def config_type(cls) -> dict:
        return {"base_dir": dg.Field(dg.StringSource, is_required=False),
                "polling_timeout": dg.Field(dg.Float, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value) -> TeeComputeLogManager:
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def capture_logs(self, log_key: Sequence[str]) -> Generator[CapturedLogContext, None, None]:
        out_path = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDOUT])
        err_path = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDERR])
        with tee_stream_to_file(sys.stdout, out_path), tee_stream_to_file(sys.stderr, err_path):
            yield CapturedLogContext(log_key)
        touch_file(self.complete_artifact_path(log_key))  # Dagster's marker: this capture is complete


def _fileno(stream: IO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # a test runner's in-memory stream
        return None


def _copy(source_fd: int, path: str, terminal_fd: int) -> None:
    with open(path, "ab", buffering=0) as file:
        while chunk := os.read(source_fd, READ_CHUNK_BYTES):
            file.write(chunk)
            try:
                os.write(terminal_fd, chunk)
            except OSError:  # the terminal went away: the file still gets everything
                pass
    os.close(source_fd)


@contextmanager
def tee_stream_to_file(stream: IO, path: str) -> Generator[None, None, None]:
    """Everything written to ``stream``'s file descriptor (by Python, C code or child processes) goes
    to ``path`` (appended) and still to where the stream pointed before."""
    ensure_file(path)
    stream_fd = _fileno(stream)
    if stream_fd is None:  # e.g. a test runner's in-memory stream: nothing to redirect, as in Dagster's
        yield
        return
    stream.flush()
    terminal_fd = os.dup(stream_fd)
    read_fd, write_fd = os.pipe()
    copier = threading.Thread(target=_copy, args=(read_fd, path, terminal_fd), name=f"tee-{stream_fd}",
                              daemon=True)
    copier.start()
    os.dup2(write_fd, stream_fd)
    os.close(write_fd)
    try:
        yield
    finally:
        stream.flush()
        os.dup2(terminal_fd, stream_fd)  # closes this process's last write end: the copier sees EOF
        copier.join(DRAIN_TIMEOUT_S)
        if not copier.is_alive():
            os.close(terminal_fd)
