"""MLflow tracking as a small ConfigurableResource: one run per materialization, linked both ways.

Dagster metadata links to the MLflow run (in MLflow's ML view); every run this resource opens for a step
carries the Dagster run id, asset key and, with ``dagster_ui_url`` set, links to both pages in the Dagster
UI (tags, and the run description that MLflow's run page shows with clickable links).

The locking that makes the default SQLite store safe under parallel steps lives in
``pipelines.tracking`` so training subprocesses share it. A run whose process died (``kill -9``, OOM)
stays RUNNING in MLflow; the next ``start_run`` closes it as KILLED (``close_interrupted_runs``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from pipelines.registry import ModelRegistry
from pipelines.tracking import PROCESS_TAG, RunLogger, locked, make_client, process_gone, sqlite_path, this_process

INSTANCE_TAG = "dagster.instance"  # the Dagster instance (its root directory) that ran the step
CLOSED_TAG = "llm_lineage.closed_because"  # why close_interrupted_runs marked a run KILLED


ML_VIEW = "workflowType=machine_learning"
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")  # MLflow's SQLAlchemy stores, any +driver


def database_uri(tracking_uri: str) -> bool:
    """Whether MLflow reads ``tracking_uri`` as a database of its own (no server between): then the resource
    chooses where a new experiment's artifacts go, or MLflow would put them in ./mlruns of each step's cwd."""
    scheme = tracking_uri.partition("://")[0] if "://" in tracking_uri else ""
    return scheme.partition("+")[0] in DATABASE_SCHEMES


NOTE_TAG = "mlflow.note.content"  # the run's description: Markdown, shown with clickable links on its page


def mlflow_run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    """The run in MLflow's classic ML view (without the parameter, MLflow 3 opens its GenAI view: runs
    labelled "Evaluations", a traces dashboard)."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{ML_VIEW}"


class TrackedRun(RunLogger):
    """An open run plus where people look at it."""

    def __init__(self, tracking_uri: str, run_id: str, experiment_id: str, ui_url: str, client):
        super().__init__(tracking_uri, run_id, client)
        self.experiment_id, self._ui_url = experiment_id, ui_url

    @property
    def url(self) -> str:
        return mlflow_run_url(self._ui_url, self.experiment_id, self.run_id)


class MLflowUnavailable(RuntimeError):
    """The tracking store could not be reached: the step fails instead of losing its metrics."""


class MLflowTracking(dg.ConfigurableResource):
    """Where runs go (``tracking_uri``) and where people look at them (``ui_url``).

    Credentials come only from environment variables through ``dg.EnvVar`` (see
    ``pipelines/definitions.py``); they are handed to MLflow through its own environment variables and
    never written to metadata, params or logs.
    """

    tracking_uri: str = Field(description="sqlite:///path/mlflow.db (default), http://host:port server, "
                              "or postgresql+psycopg2://user:password@host:port/db.")
    experiment_name: str = Field(default="llm-lineage")
    artifact_root: str | None = Field(default=None, description="Artifact location for a new experiment "
                                      "on a database store (SQLite, Postgres): a directory, or a URL such as "
                                      "s3://bucket/prefix; a tracking server chooses its own.")
    ui_url: str = Field(default="http://127.0.0.1:5000", description="MLflow UI base, for run links.")
    dagster_ui_url: str = Field(default="http://127.0.0.1:3000", description="Dagster UI base, for the links "
                                "back from MLflow runs and model versions ('' for none): `make ui`'s address.")
    registered_model_prefix: str = Field(default="llm-lineage", description="Registered models are "
                                         "named <prefix>-instruct and <prefix>-reasoning.")
    tracking_token: str | None = Field(default=None, description="Bearer token for a secured tracking server; "
                                       "set through dg.EnvVar('MLFLOW_TRACKING_TOKEN'), never inline.")
    tracking_password: str | None = Field(default=None, description="Basic-auth password (with "
                                          "MLFLOW_TRACKING_USERNAME); dg.EnvVar('MLFLOW_TRACKING_PASSWORD').")
    http_max_retries: int = Field(default=2, description="Retries of a failed request to a tracking server "
                                  "before the step fails (MLflow's default, 7 with backoff, waits minutes).")
    http_timeout_s: int = Field(default=30, description="Seconds before one request to the server times out.")
    _instance: dg.DagsterInstance | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """In a step: keep the instance, which knows whether the Dagster run behind an open MLflow run ended."""
        self._instance = context.instance

    def _export_settings(self) -> None:
        """MLflow (here and in training subprocesses, which inherit the environment) reads these variables."""
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(self.http_max_retries)
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(self.http_timeout_s)
        for variable, value in (("MLFLOW_TRACKING_TOKEN", self.tracking_token),
                                ("MLFLOW_TRACKING_PASSWORD", self.tracking_password)):
            if isinstance(value, dg.EnvVar):  # used outside a run: Dagster has not resolved it yet
                value = value.get_value()
            if value:
                os.environ[variable] = value

    def client(self):
        self._export_settings()
        return make_client(self.tracking_uri)

    def _unavailable(self, action: str, error: Exception) -> MLflowUnavailable:
        database = sqlite_path(self.tracking_uri)
        question = (f"is {database} a readable, writable MLflow database?" if database is not None
                    else "is the server up (`make ui` or `mlflow server`)?")
        return MLflowUnavailable(
            f"could not {action} on the MLflow tracking store {self.tracking_uri}: {type(error).__name__}: "
            f"{str(error)[:400]} -- {question} Fix it or point MLFLOW_TRACKING_URI elsewhere, then "
            "materialize again")

    def experiment_id(self, client) -> str:
        def get_or_create() -> str:
            experiment = client.get_experiment_by_name(self.experiment_name)
            if experiment is not None:
                return experiment.experiment_id
            location = None
            if self.artifact_root and database_uri(self.tracking_uri):  # a URL (s3://bucket/prefix) as it is
                location = self.artifact_root if "://" in self.artifact_root \
                    else Path(self.artifact_root).resolve().as_uri()
            return client.create_experiment(self.experiment_name, artifact_location=location)

        return locked(self.tracking_uri, get_or_create)

    @contextmanager
    def start_run(self, run_name: str, tags: dict[str, str] | None = None) -> Iterator[TrackedRun]:
        """Open a run, yield it, and close it FINISHED or FAILED so no run is left dangling.

        An unreachable store fails the step with :class:`MLflowUnavailable` naming the URI, a full disk
        with ``TrackingStoreFull`` naming the place; a run whose logging failed is never marked FINISHED,
        so a rerun logs everything again. Runs left open by dead processes are closed first.
        """
        from mlflow.exceptions import MlflowException
        from requests import RequestException

        unreachable = (MlflowException, RequestException, OSError)
        client = self.client()
        try:
            experiment_id = self.experiment_id(client)
            self.close_interrupted_runs(client, experiment_id)
            tags = {**(tags or {}), PROCESS_TAG: this_process()}
            run = locked(self.tracking_uri, lambda: client.create_run(experiment_id, run_name=run_name, tags=tags))
        except unreachable as error:
            raise self._unavailable(f"open run '{run_name}'", error) from error
        tracked = TrackedRun(self.tracking_uri, run.info.run_id, experiment_id, self.ui_url, client)
        try:
            yield tracked
        except BaseException as failure:
            try:
                locked(self.tracking_uri, lambda: client.set_terminated(tracked.run_id, "FAILED"))
            except unreachable as error:
                if isinstance(failure, unreachable):
                    raise self._unavailable(f"log to run {tracked.run_id} ('{run_name}')", failure) from failure
                raise self._unavailable(f"mark run {tracked.run_id} failed", error) from failure
            raise
        try:
            locked(self.tracking_uri, lambda: client.set_terminated(tracked.run_id, "FINISHED"))
        except unreachable as error:
            raise self._unavailable(f"finish run {tracked.run_id} ('{run_name}')", error) from error

    def close_interrupted_runs(self, client, experiment_id: str) -> dict[str, str]:
        """Mark KILLED (with the reason in a tag) the RUNNING runs nobody will close: the process that
        opened them is gone from this host, or (runs from elsewhere) their Dagster run has ended or is
        unknown to the instance that recorded it. Returns {run id: reason}."""
        running = locked(self.tracking_uri, lambda: client.search_runs(
            [experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000))
        closed = {}
        for run in running:
            reason = self._interrupted(run.data.tags)
            if reason is not None:
                run_id = run.info.run_id
                locked(self.tracking_uri, lambda: client.set_tag(run_id, CLOSED_TAG, reason))
                locked(self.tracking_uri, lambda: client.set_terminated(run_id, "KILLED"))
                closed[run_id] = reason
        return closed

    def _interrupted(self, tags: dict[str, str]) -> str | None:
        process = tags.get(PROCESS_TAG)
        gone = process_gone(process) if process else None
        if gone is not None:  # opened on this host: its process decides
            return f"the process that opened it ({process}) ended without closing it" if gone else None
        dagster_run_id, instance = tags.get("dagster.run_id"), self._instance
        if not dagster_run_id or instance is None:
            return None
        dagster_run = instance.get_run_by_id(dagster_run_id)
        if dagster_run is None:  # gone from this instance, or never in it: another instance's is not ours
            recorded_by = tags.get(INSTANCE_TAG)  # None: a run from before the tag existed
            if recorded_by is None or recorded_by == instance.root_directory:
                return f"its Dagster run {dagster_run_id} no longer exists"
            return None
        if dagster_run.is_finished:
            return f"its Dagster run {dagster_run_id} ended {dagster_run.status.value}"
        return None

    def registry(self) -> ModelRegistry:
        self._export_settings()
        return ModelRegistry(self.tracking_uri)

    def runs(self, filter_string: str = "") -> list:
        """Runs of this experiment (used by audits and tests)."""
        client = self.client()
        experiment_id = self.experiment_id(client)
        return locked(self.tracking_uri, lambda: client.search_runs([experiment_id], filter_string=filter_string,
                                                                    max_results=1000))

    def dagster_links(self, run_id: str | None, asset_path: str | None) -> dict[str, str]:
        """URLs of a Dagster run and an asset (key path joined by /) in the Dagster UI; none without
        ``dagster_ui_url``."""
        base = self.dagster_ui_url.rstrip("/")
        links = {"dagster.run_url": f"{base}/runs/{run_id}" if run_id else None,
                 "dagster.asset_url": f"{base}/assets/{asset_path}" if asset_path else None}
        return {key: url for key, url in links.items() if base and url}

    def dagster_tags(self, context: dg.AssetExecutionContext) -> dict[str, str]:
        """Tags linking a step's MLflow run back to Dagster: run id, asset key, their UI pages."""
        asset, run_id = context.asset_key.to_user_string(), context.run.run_id
        links = self.dagster_links(run_id, "/".join(context.asset_key.path))
        tags = {"dagster.run_id": run_id, "dagster.asset_key": asset, **links,
                NOTE_TAG: f"Materialization of Dagster asset {markdown_link(asset, links.get('dagster.asset_url'))} "
                          f"in Dagster run {markdown_link(run_id, links.get('dagster.run_url'))}."}
        if context.instance.root_directory:
            tags[INSTANCE_TAG] = context.instance.root_directory
        if context.has_partition_key:
            tags["dagster.partition_key"] = context.partition_key
        return tags

    def model_version_links(self, context: dg.AssetExecutionContext, checkpoint: str, data_version: str,
                            trained_in: str | None) -> tuple[dict[str, str], str]:
        """Tags and a Markdown description that link a model version to its checkpoint asset, data version
        and the Dagster run that trained it (``trained_in``), and to the step registering it."""
        trained = self.dagster_links(trained_in, checkpoint)
        step, run_id = context.asset_key.to_user_string(), context.run.run_id
        registering = self.dagster_links(run_id, "/".join(context.asset_key.path))
        tags = {"dagster.asset_key": checkpoint, "dagster.data_version": data_version, **trained,
                **({"dagster.run_id": trained_in} if trained_in else {}),
                "dagster.registered_by": step, "dagster.registered_by_run_id": run_id,
                **({"dagster.registered_by_run_url": registering["dagster.run_url"]} if registering else {})}
        trained_text = f", trained in Dagster run {markdown_link(trained_in, trained.get('dagster.run_url'))}" \
            if trained_in else ""
        description = (f"Dagster asset {markdown_link(checkpoint, trained.get('dagster.asset_url'))}, data version "
                       f"`{data_version}`{trained_text}; registered by "
                       f"{markdown_link(step, registering.get('dagster.asset_url'))} in Dagster run "
                       f"{markdown_link(run_id, registering.get('dagster.run_url'))}.")
        return tags, description

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return mlflow_run_url(self.ui_url, experiment_id, run_id)

    def model_version_url(self, name: str, version: str) -> str:
        return f"{self.ui_url.rstrip('/')}/#/models/{name}/versions/{version}"

    def logged_model_url(self, experiment_id: str, model_id: str) -> str:
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/models/{model_id}?{ML_VIEW}"


def markdown_link(text: str, url: str | None) -> str:
    return f"[`{text}`]({url})" if url else f"`{text}`"
