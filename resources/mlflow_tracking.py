"""MLflow tracking as a small ConfigurableResource: one run per materialization, linked from Dagster.

The locking that makes the default SQLite store safe under parallel steps lives in
``pipelines.tracking`` so training subprocesses share it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from pydantic import Field

from pipelines.registry import ModelRegistry
from pipelines.tracking import RunLogger, locked, make_client, sqlite_path


class TrackedRun(RunLogger):
    """An open run plus where people look at it."""

    def __init__(self, tracking_uri: str, run_id: str, experiment_id: str, ui_url: str, client):
        super().__init__(tracking_uri, run_id, client)
        self.experiment_id, self._ui_url = experiment_id, ui_url

    @property
    def url(self) -> str:
        return f"{self._ui_url.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"


class MLflowTracking(dg.ConfigurableResource):
    """Where runs go (``tracking_uri``) and where people look at them (``ui_url``)."""

    tracking_uri: str = Field(description="sqlite:///path/mlflow.db (default) or http://host:port server.")
    experiment_name: str = Field(default="llm-lineage")
    artifact_root: str | None = Field(default=None, description="Artifact location for a new experiment "
                                      "on a SQLite store; a tracking server chooses its own.")
    ui_url: str = Field(default="http://127.0.0.1:5000", description="MLflow UI base, for run links.")
    registered_model_prefix: str = Field(default="llm-lineage", description="Registered models are "
                                         "named <prefix>-instruct and <prefix>-reasoning.")

    def client(self):
        return make_client(self.tracking_uri)

    def experiment_id(self, client) -> str:
        def get_or_create() -> str:
            experiment = client.get_experiment_by_name(self.experiment_name)
            if experiment is not None:
                return experiment.experiment_id
            location = None
            if self.artifact_root and sqlite_path(self.tracking_uri) is not None:
                location = Path(self.artifact_root).resolve().as_uri()
            return client.create_experiment(self.experiment_name, artifact_location=location)

        return locked(self.tracking_uri, get_or_create)

    @contextmanager
    def start_run(self, run_name: str, tags: dict[str, str] | None = None) -> Iterator[TrackedRun]:
        """Open a run, yield it, and close it FINISHED or FAILED so no run is left dangling."""
        client = self.client()
        experiment_id = self.experiment_id(client)
        run = locked(self.tracking_uri, lambda: client.create_run(experiment_id, run_name=run_name, tags=tags or {}))
        tracked = TrackedRun(self.tracking_uri, run.info.run_id, experiment_id, self.ui_url, client)
        try:
            yield tracked
        except BaseException:
            locked(self.tracking_uri, lambda: client.set_terminated(tracked.run_id, "FAILED"))
            raise
        locked(self.tracking_uri, lambda: client.set_terminated(tracked.run_id, "FINISHED"))

    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.tracking_uri)

    def runs(self, filter_string: str = "") -> list:
        """Runs of this experiment (used by audits and tests)."""
        client = self.client()
        experiment_id = self.experiment_id(client)
        return locked(self.tracking_uri, lambda: client.search_runs([experiment_id], filter_string=filter_string,
                                                                    max_results=1000))

    def dagster_tags(self, context: dg.AssetExecutionContext) -> dict[str, str]:
        tags = {"dagster.run_id": context.run.run_id, "dagster.asset_key": context.asset_key.to_user_string()}
        if context.has_partition_key:
            tags["dagster.partition_key"] = context.partition_key
        return tags
