"""A real Dagster UI (``dagster dev``: webserver + daemon) on loopback, and a small GraphQL client for it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from pipelines.runtime.staleness import LAUNCH  # the UI's launchRun mutation, as the demo sends it

UI_START_TIMEOUT_S = 240
RUN_TIMEOUT_S = 600
POLL_S = 1.0
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}

RUN_STATUS = """
query Status($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run { status } } }"""
LOCATIONS = """
{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on RepositoryLocation { repositories { name } }
                                   ... on PythonError { message } } } } } }"""


@dataclass
class DagsterUI:
    url: str
    process: subprocess.Popen
    log_path: Path

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}},
                                 timeout=60)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def location(self) -> tuple[str, str]:
        """(location name, repository name) of the loaded code location."""
        entries = self.graphql(LOCATIONS)["workspaceOrError"]["locationEntries"]
        loaded = [e for e in entries if e["locationOrLoadError"]
                  and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"]
        if not loaded:
            raise AssertionError(f"no code location loaded: {entries}\n{self.log()[-3000:]}")
        return loaded[0]["name"], loaded[0]["locationOrLoadError"]["repositories"][0]["name"]

    def launch_assets(self, asset_names: list[str]) -> str:
        location, repository = self.location()
        params = {"selector": {"repositoryLocationName": location, "repositoryName": repository,
                               "jobName": "__ASSET_JOB",
                               "assetSelection": [{"path": [name]} for name in asset_names]},
                  "runConfigData": {}}
        launched = self.graphql(LAUNCH, {"params": params})["launchRun"]
        if launched["__typename"] != "LaunchRunSuccess":
            raise AssertionError(f"launchRun failed: {launched}")
        return launched["run"]["runId"]

    def wait_for_run(self, run_id: str) -> str:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        status = None
        while time.monotonic() < deadline:
            status = self.graphql(RUN_STATUS, {"runId": run_id})["runOrError"]["status"]
            if status in TERMINAL:
                return status
            time.sleep(POLL_S)
        raise AssertionError(f"run {run_id} still {status} after {RUN_TIMEOUT_S}s\n{self.log()[-3000:]}")


def start_dagster_ui(project_root: Path, dagster_home: Path, env: dict[str, str], port: int,
                     log_path: Path) -> DagsterUI:
    """``dagster dev`` as ``make ui`` runs it (webserver + daemon, loopback); waits until the code loads."""
    log = open(log_path, "w")
    process = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "dagster"), "dev", "-w", "workspace.yaml",
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=project_root, env={**os.environ, **env, "DAGSTER_HOME": str(dagster_home)},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    ui = DagsterUI(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + UI_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dagster dev exited: {ui.log()[-3000:]}")
        try:
            entries = ui.graphql(LOCATIONS)["workspaceOrError"]["locationEntries"]
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                return ui
        except (requests.RequestException, AssertionError, KeyError, TypeError):
            pass
        time.sleep(POLL_S)
    stop(ui)
    raise RuntimeError(f"dagster dev did not load the code location in {UI_START_TIMEOUT_S}s: {ui.log()[-3000:]}")


def stop(ui: DagsterUI) -> None:
    """SIGTERM the process group, then SIGKILL what is left of it (code servers it spawned on the way out)."""
    os.killpg(ui.process.pid, signal.SIGTERM)
    try:
        ui.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(ui.process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    ui.process.wait()
