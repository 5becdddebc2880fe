"""The issue's scenario: 50 conversations, 50 reasoning traces and 50 DPO pairs dropped into the raw-data
folder (150 of 150 were quarantined as "missing field 'question'" and the blocking check stopped everything).
Now every well-formed row reaches its dataset, a bad one is quarantined naming its field, eval items are kept
out, and the audit names every file with its SHA-256."""

import json

import dagster as dg
import pytest

from assets.datasets import eval_suites, preference_dataset, sft_dataset, think_dataset, training_problems
from assets.raw import raw_problems, raw_training_data
from pipelines.definitions import default_resources
from pipelines.lineage import file_sha256
from tests.fixtures.user_data import BAD_SFT, preference_records, sft_records, think_records, write_jsonl, write_parquet

DATA = [raw_problems, raw_training_data, eval_suites, training_problems, sft_dataset, think_dataset]


@pytest.fixture
def home(tmp_path):
    return tmp_path / "lineage"


def _resources(home):
    return default_resources(home, profile="smoke", tracking_uri=f"sqlite:///{home}/mlflow.db")


def _materialize(home, assets, instance, run_config=None):
    return dg.materialize(assets, resources=_resources(home), instance=instance, run_config=run_config or {},
                          raise_on_error=False)


def _metadata(result, asset):
    return {k: v.value for k, v in result.asset_materializations_for_node(asset)[-1].metadata.items()}


def test_chat_reasoning_and_preference_files_in_the_raw_folder_are_trained_on(home):
    raw = home / "raw_data"
    write_jsonl(raw / "chat.jsonl", sft_records(50), BAD_SFT[:1])
    write_jsonl(raw / "traces.jsonl", think_records(50))
    write_parquet(raw / "pairs.parquet", preference_records(50, "explicit"))
    instance = dg.DagsterInstance.ephemeral()
    result = _materialize(home, DATA, instance)
    assert result.success
    store = _resources(home)["duckdb"]
    user = _metadata(result, "raw_training_data")
    assert user["kept"] == {"sft": 50, "think": 50, "preference": 50} and user["quarantined"] == 1
    [bad] = store.rows("raw_training_quarantine")
    assert (bad["file"], bad["line"], bad["kind"]) == (str((raw / "chat.jsonl").resolve()), 2, "no_assistant_turn")
    assert _metadata(result, "raw_problems")["source"] == "synthetic"  # no problems file: the generator's, for eval

    sft = store.rows("sft_dataset")
    assert len(sft) == 50 and {r["source"] for r in sft} == {str((raw / "chat.jsonl").resolve())}  # auto: yours only
    assert sum(r["messages"] is not None for r in sft) == 50 - sum(1 for i in range(50) if i % 3 and i % 4)
    think = store.rows("think_dataset")
    assert len(think) == 50 and all(r["completion"].startswith("<think>") for r in think)
    assert any("\n" in r["completion"] and "\\boxed{\\frac{x}{3}}" in r["completion"] for r in think)

    with_problems = _materialize(home, [sft_dataset], instance, {"ops": {"sft_dataset": {"config": {"problems": "include"}}}})
    assert len(store.rows("sft_dataset")) == 50 + _metadata(result, "training_problems")["dagster/row_count"]
    assert with_problems.success

    pairs = _materialize(home, [preference_dataset], instance)  # synthetic source: only your pairs (auto)
    assert pairs.success and {r["chosen"] for r in store.rows("preference_dataset")} == {"Even."}

    audited = {s["path"]: s["sha256"] for s in _metadata(result, "raw_training_data")["lineage/sources"]}
    assert audited == {str((raw / n).resolve()): file_sha256(raw / n) for n in ("chat.jsonl", "traces.jsonl", "pairs.parquet")}


def test_a_conversation_that_repeats_an_eval_question_is_removed_and_reported(home, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    assert _materialize(home, [raw_problems, eval_suites], instance).success
    item = _resources(home)["duckdb"].rows("eval_suites")[0]
    records = sft_records(5) + [{"messages": [{"role": "user", "content": item["question"]},
                                              {"role": "assistant", "content": item["answer"]}]}]
    write_jsonl(tmp_path / "mine.jsonl", records)
    config = {"ops": {"raw_training_data": {"config": {"sources": [{"path": str(tmp_path / "mine.jsonl")}]}}}}
    result = _materialize(home, [raw_training_data, training_problems, sft_dataset], instance, config)
    assert result.success
    assert _metadata(result, "sft_dataset")["user_rows_removed_as_contaminated"] == 1
    store = _resources(home)["duckdb"]
    assert [r["prompt"] for r in store.rows("sft_dataset")] == [json.loads(json.dumps(r))["messages"][-2]["content"]
                                                               for r in sft_records(5)]
    [removed] = store.rows("training_data_contamination")
    assert (removed["dataset"], removed["eval_problem_id"]) == ("sft_dataset", item["problem_id"])


def test_a_broken_source_blocks_and_nothing_downstream_is_built(home, tmp_path):
    write_jsonl(tmp_path / "broken.jsonl", sft_records(2), BAD_SFT)
    config = {"ops": {"raw_training_data": {"config": {"sources": [{"path": str(tmp_path / "broken.jsonl")}]}}}}
    instance = dg.DagsterInstance.ephemeral()
    result = _materialize(home, DATA, instance, config)
    [check] = [c for c in result.get_asset_check_evaluations() if c.asset_key == raw_training_data.key]
    assert check.check_name == "raw_training_data_quarantine_rate_below_threshold" and not check.passed
    assert "5 of 7 records quarantined" in check.description
    store = _resources(home)["duckdb"]
    assert "raw_training_data" not in store.tables() and len(store.rows("raw_training_quarantine_rejected")) == 5
    assert not result.success and "sft_dataset" not in {e.asset_key.to_user_string()
                                                        for e in result.get_asset_materialization_events()}


def test_a_published_source_is_a_view_over_its_versioned_parquet_file(home, tmp_path):
    """Copying a million conversations into the database file took ~20 s of the step; the published
    table is a view over the immutable parquet file named by its version instead."""
    write_jsonl(tmp_path / "a.jsonl", sft_records(5))
    config = {"ops": {"raw_training_data": {"config": {"sources": [{"path": str(tmp_path / "a.jsonl")}]}}}}
    result = _materialize(home, [raw_training_data], dg.DagsterInstance.ephemeral(), config)
    version = result.asset_materializations_for_node("raw_training_data")[-1].tags["dagster/data_version"]
    store = _resources(home)["duckdb"]
    [kind] = store.query("SELECT table_type FROM information_schema.tables WHERE table_name = 'raw_training_data'")
    assert kind["table_type"] == "VIEW" and store.count("raw_training_data") == 5
    assert sorted(p.name for p in (home / "tables" / "raw_training_data").iterdir()) == [f"{version}.parquet"]
