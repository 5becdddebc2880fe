"""MLflow logging that is safe on the default SQLite store, usable with or without Dagster.

SQLite allows one writer at a time and MLflow does not wait for it, so parallel Dagster steps (and
training subprocesses logging per step) would hit ``database is locked``. With a ``sqlite://`` URI
every call here holds an inter-process file lock; with an ``http://`` tracking server (production,
and the tests) the server serializes writes and no lock is taken.

A full disk under the store is reported as such (:class:`TrackingStoreFull`): SQLite says "disk I/O
error" or "database or disk is full", which read like a broken server rather than a disk to clean up.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
BATCH_LIMIT = 1000  # MLflow's log_batch limit on metrics per call
PARAM_VALUE_CHARS = 6000
PROCESS_TAG = "llm_lineage.process"  # host:pid:start time of the process that opened the run
# What a write to a full (or quota-limited, or size-limited) disk looks like from the OS and from SQLite.
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
NO_TEMP_DIR = "no usable temporary directory"  # Python's tempfile, when no candidate can take a file
DISK_FULL_MESSAGES = ("database or disk is full", "disk i/o error", "no space left on device",
                      "disk quota exceeded", "file too large", NO_TEMP_DIR)


class TrackingStoreFull(RuntimeError):
    """The disk under the tracking store is full (or unwritable): free space there; no server is down."""


def sqlite_path(tracking_uri: str) -> Path | None:
    return Path(tracking_uri.removeprefix("sqlite:///")) if tracking_uri.startswith("sqlite:///") else None


@contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    database = sqlite_path(tracking_uri)
    if database is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_suffix(".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def locked(tracking_uri: str, call: Callable[[], T]) -> T:
    try:
        with store_lock(tracking_uri):
            return call()
    except TrackingStoreFull:
        raise
    except Exception as error:
        if disk_full(error):
            raise store_full(tracking_uri, error) from error
        raise


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _disk_full_cause(error: BaseException) -> BaseException | None:
    """The deepest error in ``error``'s chain that is a write refused for lack of space, if any."""
    found = None
    for e in _chain(error):
        if (isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS) or any(
                message in str(e).lower() for message in DISK_FULL_MESSAGES):
            found = e
    return found


def disk_full(error: BaseException) -> bool:
    return _disk_full_cause(error) is not None


def store_full(tracking_uri: str, error: BaseException) -> TrackingStoreFull:
    """Names the place to free: the file the OS refused to write, the temporary directory (MLflow stages
    artifacts there), the SQLite file, or else the server."""
    cause = _disk_full_cause(error) or error
    written = next((e.filename for e in _chain(error) if isinstance(e, OSError) and e.filename), None)
    if NO_TEMP_DIR in str(cause).lower():
        place, remedy = "the temporary directory (TMPDIR)", "or point TMPDIR at another disk"
    else:
        place, remedy = written or sqlite_path(tracking_uri), "or move LLM_LINEAGE_HOME / MLFLOW_TRACKING_URI"
    text = (f"the disk holding {place} is full (or unwritable)" if place is not None else
            f"the MLflow tracking server {tracking_uri} reports that the disk holding its store is full "
            "(or unwritable)")
    detail = str(cause).strip().splitlines()[0][:300] if str(cause).strip() else ""
    return TrackingStoreFull(f"{text} ({type(cause).__name__}: {detail}) -- free space there ({remedy}), "
                             "then materialize again")


def this_process() -> str:
    """The value of :data:`PROCESS_TAG` for this process (the start time tells a reused pid apart)."""
    import psutil

    return f"{socket.gethostname()}:{os.getpid()}:{psutil.Process().create_time():.2f}"


def process_gone(tag: str) -> bool | None:
    """Whether the process a :data:`PROCESS_TAG` names has ended; None when it ran on another host."""
    import psutil

    try:
        host, pid, started = tag.rsplit(":", 2)
        pid, started = int(pid), float(started)
    except ValueError:  # not written by this_process
        return None
    if host != socket.gethostname():
        return None
    try:
        process = psutil.Process(pid)
        return abs(process.create_time() - started) > 1 or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def make_client(tracking_uri: str):
    from mlflow import MlflowClient

    return locked(tracking_uri, lambda: MlflowClient(tracking_uri=tracking_uri))


class RunLogger:
    """Logs into one existing MLflow run (by id); every call goes through the store lock."""

    def __init__(self, tracking_uri: str, run_id: str, client=None):
        self.tracking_uri, self.run_id = tracking_uri, run_id
        self._client = client or make_client(tracking_uri)

    def _call(self, call: Callable[[], T]) -> T:
        return locked(self.tracking_uri, call)

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        batch = [Param(key, str(value)[:PARAM_VALUE_CHARS]) for key, value in params.items()]
        self._call(lambda: self._client.log_batch(self.run_id, params=batch))

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        self.log_metric_points([(key, step, value) for key, value in metrics.items()])

    def log_metric_history(self, key: str, points: list[tuple[int, float]]) -> None:
        self.log_metric_points([(key, step, value) for step, value in points])

    def log_metric_points(self, points: list[tuple[str, int, float]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, int(step)) for key, step, value in points]
        for start in range(0, len(batch), BATCH_LIMIT):
            chunk = batch[start:start + BATCH_LIMIT]
            self._call(lambda: self._client.log_batch(self.run_id, metrics=chunk))

    def log_text(self, text: str, artifact_file: str) -> None:
        self._call(lambda: self._client.log_text(self.run_id, text, artifact_file))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._call(lambda: self._client.log_artifact(self.run_id, str(path), artifact_path))

    def log_table(self, columns: dict[str, list], artifact_file: str) -> None:
        """A table artifact ({column: values}) that MLflow shows as a table, not a file."""
        self._call(lambda: self._client.log_table(self.run_id, columns, artifact_file))
