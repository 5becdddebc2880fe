"""Ask Dagster what is stale, and launch just that, the way the UI's *Materialize changed and missing* does.

Every asset carries a ``code_version`` (its step code's version and the active profile's settings,
``pipelines/definitions.py``) and data versions, and each materialization records the input versions it
consumed; from those Dagster marks an asset ``STALE`` (code or an input changed since it was built),
``MISSING`` or ``FRESH``. A re-run of ``make demo`` with nothing changed therefore launches nothing. The
questions go through Dagster's GraphQL API, as the UI sends them, with the ``dagster-graphql`` CLI against a
workspace (a running code server): ``assetNodes.staleStatus`` and the ``launchRun`` mutation, whose asset
selection brings the selected assets' checks along.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

GRAPHQL_TIMEOUT_S = 300
ASSET_JOB = "__ASSET_JOB"
REPOSITORY = "__repository__"  # the name Dagster gives a Definitions object's repository

STATUS_QUERY = "{ assetNodes { assetKey { path } isMaterializable staleStatus } }"
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}"""


def graphql(workspace: Path, document: str, variables: dict | None = None, cwd: Path | None = None) -> dict:
    """One GraphQL document against the instance in ``$DAGSTER_HOME`` and the code in ``workspace``."""
    command = [str(Path(sys.executable).with_name("dagster-graphql")), "-w", str(workspace), "-t", document]
    if variables is not None:
        command += ["-v", json.dumps(variables)]
    completed = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=GRAPHQL_TIMEOUT_S)
    answers = [line for line in completed.stdout.splitlines() if line.startswith(("{\"data\"", "{\"errors\""))]
    if not answers:
        raise RuntimeError(f"dagster-graphql gave no answer (exit {completed.returncode}): "
                           f"{(completed.stdout + completed.stderr)[-2000:]}")
    answer = json.loads(answers[-1])
    if answer.get("errors"):
        raise RuntimeError(f"dagster-graphql: {answer['errors']}")
    return answer["data"]


def asset_statuses(workspace: Path, cwd: Path | None = None) -> dict[str, str]:
    """Every materializable asset's status: ``FRESH``, ``STALE`` or ``MISSING``."""
    nodes = graphql(workspace, STATUS_QUERY, cwd=cwd)["assetNodes"]
    return {"/".join(node["assetKey"]["path"]): node["staleStatus"] for node in nodes if node["isMaterializable"]}


def to_build(statuses: dict[str, str]) -> list[str]:
    return sorted(asset for asset, status in statuses.items() if status != "FRESH")


def launch_assets(workspace: Path, location: str, assets: list[str], cwd: Path | None = None) -> str:
    """Submit a run of ``assets`` (and their checks) to the instance's run queue; its run id."""
    params = {"selector": {"repositoryLocationName": location, "repositoryName": REPOSITORY, "jobName": ASSET_JOB,
                           "assetSelection": [{"path": asset.split("/")} for asset in assets]},
              "runConfigData": {}}
    answer = graphql(workspace, LAUNCH, {"params": params}, cwd=cwd)["launchRun"]
    if answer["__typename"] != "LaunchRunSuccess":
        raise RuntimeError(f"launchRun failed: {answer}")
    return answer["run"]["runId"]
