"""`make demo` builds what Dagster calls stale or missing (issue #20): a no-change re-run launches nothing, and a
changed raw-data folder makes the raw stage stale again. Statuses come from Dagster's GraphQL API (the
``staleStatus`` the UI shows), through pipelines/runtime/staleness.py."""

from __future__ import annotations

import json
import shutil

import dagster as dg
import pytest

from pipelines import demo
from pipelines.definitions import PROJECT_ROOT
from pipelines.runtime.staleness import asset_statuses, to_build

WORKSPACE = PROJECT_ROOT / "workspace.yaml"
BUILT = ["raw_problems", "eval_suites"]

pytestmark = pytest.mark.slow


@pytest.fixture
def demo_home(tmp_path, monkeypatch):
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    for name, value in {"DAGSTER_HOME": str(dagster_home), "LLM_LINEAGE_HOME": str(tmp_path / "lineage"),
                        "LLM_LINEAGE_PROFILE": "smoke"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "lineage"


def test_only_stale_or_missing_assets_are_built_and_a_raw_change_makes_the_raw_stage_stale(demo_home):
    built, run_id = demo.build(queued=False, assets=BUILT)
    assert built == BUILT and run_id is None

    statuses = asset_statuses(WORKSPACE, cwd=PROJECT_ROOT)
    assert {asset: statuses[asset] for asset in BUILT} == {"raw_problems": "FRESH", "eval_suites": "FRESH"}
    assert statuses["base_checkpoint"] == "MISSING" and "raw_problems" not in to_build(statuses)

    # a new problems file in the watched folder: observed by the demo, it makes raw_problems stale
    raw = demo_home / "raw_data"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "extra.jsonl").write_text(json.dumps({"question": "What is 2 plus 3?", "answer": "2+3=5\n#### 5"}) + "\n")
    with dg.DagsterInstance.get() as instance:
        demo._observe_raw_folder(instance)
    statuses = asset_statuses(WORKSPACE, cwd=PROJECT_ROOT)
    assert statuses["raw_problems"] == "STALE" and "raw_problems" in to_build(statuses)
