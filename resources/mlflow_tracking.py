"""MLflow tracking as a small ConfigurableResource: one run per materialization, linked from Dagster.

The default store is a local SQLite file. SQLite allows one writer at a time and MLflow does not wait
for it, so parallel Dagster steps would hit ``database is locked``; with a ``sqlite://`` URI every
MLflow call here holds an inter-process file lock. With an ``http://`` tracking server (production,
and the tests) the server serializes writes and no lock is taken.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import dagster as dg
from pydantic import Field

T = TypeVar("T")


def _sqlite_path(tracking_uri: str) -> Path | None:
    return Path(tracking_uri.removeprefix("sqlite:///")) if tracking_uri.startswith("sqlite:///") else None


@contextmanager
def _store_lock(tracking_uri: str) -> Iterator[None]:
    database = _sqlite_path(tracking_uri)
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


class TrackedRun:
    """An open MLflow run; every call goes through the store lock."""

    def __init__(self, tracking: MLflowTracking, client, run_id: str, experiment_id: str):
        self._tracking, self._client = tracking, client
        self.run_id, self.experiment_id = run_id, experiment_id

    @property
    def url(self) -> str:
        return f"{self._tracking.ui_url.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        batch = [Param(key, str(value)[:6000]) for key, value in params.items()]
        self._tracking._locked(lambda: self._client.log_batch(self.run_id, params=batch))

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        self._tracking._locked(lambda: self._client.log_batch(self.run_id, metrics=batch))

    def log_metric_history(self, key: str, points: list[tuple[int, float]]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for step, value in points]
        for start in range(0, len(batch), 1000):
            self._tracking._locked(lambda: self._client.log_batch(self.run_id, metrics=batch[start:start + 1000]))

    def log_text(self, text: str, artifact_file: str) -> None:
        self._tracking._locked(lambda: self._client.log_text(self.run_id, text, artifact_file))

    def log_dict(self, data: dict, artifact_file: str) -> None:
        self.log_text(json.dumps(data, indent=2, default=str), artifact_file)


class MLflowTracking(dg.ConfigurableResource):
    """Where runs go (``tracking_uri``) and where people look at them (``ui_url``)."""

    tracking_uri: str = Field(description="sqlite:///path/mlflow.db (default) or http://host:port server.")
    experiment_name: str = Field(default="llm-lineage")
    artifact_root: str | None = Field(default=None, description="Artifact location for a new experiment "
                                      "on a SQLite store; a tracking server chooses its own.")
    ui_url: str = Field(default="http://127.0.0.1:5000", description="MLflow UI base, for run links.")

    def _locked(self, call: Callable[[], T]) -> T:
        with _store_lock(self.tracking_uri):
            return call()

    def client(self):
        from mlflow import MlflowClient

        return self._locked(lambda: MlflowClient(tracking_uri=self.tracking_uri))

    def experiment_id(self, client) -> str:
        def get_or_create() -> str:
            experiment = client.get_experiment_by_name(self.experiment_name)
            if experiment is not None:
                return experiment.experiment_id
            location = None
            if self.artifact_root and _sqlite_path(self.tracking_uri) is not None:
                location = Path(self.artifact_root).resolve().as_uri()
            return client.create_experiment(self.experiment_name, artifact_location=location)

        return self._locked(get_or_create)

    @contextmanager
    def start_run(self, run_name: str, tags: dict[str, str] | None = None) -> Iterator[TrackedRun]:
        """Open a run, yield it, and close it FINISHED or FAILED so no run is left dangling."""
        client = self.client()
        experiment_id = self.experiment_id(client)
        run = self._locked(lambda: client.create_run(experiment_id, run_name=run_name, tags=tags or {}))
        tracked = TrackedRun(self, client, run.info.run_id, experiment_id)
        try:
            yield tracked
        except BaseException:
            self._locked(lambda: client.set_terminated(tracked.run_id, "FAILED"))
            raise
        self._locked(lambda: client.set_terminated(tracked.run_id, "FINISHED"))

    def runs(self, filter_string: str = "") -> list:
        """Runs of this experiment (used by audits and tests)."""
        client = self.client()
        experiment_id = self.experiment_id(client)
        return self._locked(lambda: client.search_runs([experiment_id], filter_string=filter_string,
                                                       max_results=1000))

    def dagster_tags(self, context: dg.AssetExecutionContext) -> dict[str, str]:
        tags = {"dagster.run_id": context.run.run_id, "dagster.asset_key": context.asset_key.to_user_string()}
        if context.has_partition_key:
            tags["dagster.partition_key"] = context.partition_key
        return tags
