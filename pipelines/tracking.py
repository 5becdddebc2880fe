"""MLflow logging that is safe on the default SQLite store, usable with or without Dagster.

SQLite allows one writer at a time and MLflow does not wait for it, so parallel Dagster steps (and
training subprocesses logging per step) would hit ``database is locked``. With a ``sqlite://`` URI
every call here holds an inter-process file lock; with an ``http://`` tracking server (production,
and the tests) the server serializes writes and no lock is taken.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
BATCH_LIMIT = 1000  # MLflow's log_batch limit on metrics per call
PARAM_VALUE_CHARS = 6000


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
    with store_lock(tracking_uri):
        return call()


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
