"""`make demo`'s run can be re-executed from the UI (issue #20): the run it queues records the code location it
came from, so the webserver's "Re-execute" (GraphQL ``launchRunReexecution``) relaunches it. (An
``--in-process`` demo's run cannot: ``dagster asset materialize`` records no code location.)"""

from __future__ import annotations

import shutil

import dagster as dg
import pytest
import requests

from pipelines import demo
from pipelines.definitions import PROJECT_ROOT
from tests.conftest import _free_port
from tests.ui_server import start_dagster_ui, stop

REEXECUTE = """
mutation Reexecute($params: ReexecutionParams!) {
  launchRunReexecution(reexecutionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
  }
}"""
CHEAP = ["raw_problems", "eval_suites"]  # two data steps, no training: the run path is what is under test


@pytest.fixture
def demo_home(tmp_path, monkeypatch):
    """What `make setup` leaves (a DAGSTER_HOME with the repo's dagster.yaml), on the smoke profile."""
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {"DAGSTER_HOME": str(dagster_home), "LLM_LINEAGE_HOME": str(tmp_path / "lineage"),
           "LLM_LINEAGE_PROFILE": "smoke"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return dagster_home, env


def materializations(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    return {record.asset_key.to_user_string() for name in CHEAP for record in instance.fetch_materializations(
        dg.AssetKey(name), limit=10).records if record.run_id == run_id}


def test_the_queued_demo_run_is_re_executable_from_the_ui(demo_home, tmp_path):
    dagster_home, env = demo_home
    built, run_id = demo.build(assets=CHEAP)
    assert built == CHEAP
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        parent = instance.get_run_by_id(run_id)
        assert parent.status == dg.DagsterRunStatus.SUCCESS
        assert materializations(instance, run_id) == set(CHEAP)

    ui = start_dagster_ui(PROJECT_ROOT, dagster_home, env, _free_port(), tmp_path / "ui.log")
    try:
        # what the run page's "Re-execute all" sends; a server-side error comes back as a 500 with "errors"
        body = requests.post(f"{ui.url}/graphql", timeout=60, json={
            "query": REEXECUTE, "variables": {"params": {"parentRunId": run_id, "strategy": "ALL_STEPS"}}}).json()
        assert not body.get("errors"), body["errors"]
        launched = body["data"]["launchRunReexecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        child_id = launched["run"]["runId"]
        assert ui.wait_for_run(child_id) == "SUCCESS", ui.log()[-4000:]
    finally:
        stop(ui)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        child = instance.get_run_by_id(child_id)
        assert child.parent_run_id == run_id and child.root_run_id == run_id
        assert materializations(instance, child_id) == set(CHEAP)
