"""Operations across two generations of raw data (GSM8K slices in a watched folder, smoke profile):
decontamination of planted eval items, the raw-data sensor, declarative automation, the lineage audit."""

import json
import os
import subprocess
import sys

import dagster as dg
import pytest

from pipelines.automation import raw_data_sensor
from pipelines.definitions import all_assets, all_checks, default_resources
from pipelines.lineage import downstream_of_file, file_sha256, upstream
from tests.conftest import reconfigured

GENERATION = ["raw_problems", "raw_training_data", "eval_suites", "training_problems", "raw_corpus", "sft_dataset", "tokenizer",
              "base_checkpoint", "instruct_checkpoint", "eval_instruct", "eval_scores", "eval_report",
              "lineage_report"]
TRAIN_LINES, TEST_LINES, ADDED_LINES, PLANTED = 300, 40, 30, 8

pytestmark = pytest.mark.slow  # two generations of training and evaluation through Dagster runs


def _lines(path, start, count):
    with open(path) as handle:
        return [line for index, line in enumerate(handle) if start <= index < start + count]


def _planted(test_lines):
    """Eval questions copied into the training file: verbatim, and disguised (case, spacing, a prefix)."""
    rows = [json.loads(line) for line in test_lines[:PLANTED]]
    disguised = [{**row, "question": "Here is a problem: " + row["question"].upper().replace(" ", "  ")}
                 for row in rows[PLANTED // 2:]]
    return rows[:PLANTED // 2] + disguised


@pytest.fixture(scope="module")
def operations(tmp_path_factory, gsm8k_dir, mlflow_server):
    home = tmp_path_factory.mktemp("operations")
    raw = home / "watched"  # not the default folder: the resource setting is what counts
    raw.mkdir()
    test_lines = _lines(gsm8k_dir / "test.jsonl", 0, TEST_LINES)
    (raw / "test.jsonl").write_text("".join(test_lines))
    planted = _planted(test_lines)
    train = _lines(gsm8k_dir / "train.jsonl", 0, TRAIN_LINES) + [json.dumps(r) + "\n" for r in planted]
    (raw / "train.jsonl").write_text("".join(train))
    resources = default_resources(home, profile="smoke", tracking_uri=mlflow_server)
    resources["raw_data"] = reconfigured(resources["raw_data"], path=str(raw))
    resources["mlflow"] = reconfigured(resources["mlflow"], registered_model_prefix="operations")
    definitions = dg.Definitions(assets=all_assets, asset_checks=all_checks, resources=resources)
    (home / "dagster_home").mkdir()  # where the lineage command looks under LLM_LINEAGE_HOME
    instance = dg.DagsterInstance.from_config(str(home / "dagster_home"))
    return {"home": home, "raw": raw, "resources": resources, "definitions": definitions, "instance": instance,
            "planted": planted, "generations": [], "gsm8k": gsm8k_dir}


def _build(ops, selection=GENERATION):
    result = dg.materialize([*all_assets, *all_checks], selection=selection, resources=ops["resources"],
                            instance=ops["instance"])
    assert result.success
    return result


def _sensor(ops):
    context = dg.build_sensor_context(instance=ops["instance"], resources={"raw_data": ops["resources"]["raw_data"]})
    return raw_data_sensor(context)


def _requested(ops, cursor):
    result = dg.evaluate_automation_conditions(defs=ops["definitions"], instance=ops["instance"], cursor=cursor)
    keys = ops["definitions"].resolve_asset_graph().get_all_asset_keys()
    return {key.to_user_string() for key in keys if result.get_num_requested(key)}, result.cursor


@pytest.fixture(scope="module")
def first(operations):
    assert _sensor(operations).skip_message.startswith("the lineage has not been built yet")
    operations["generations"].append(_build(operations))
    return operations


def test_planted_eval_items_are_all_removed_before_training_and_reported(first):
    db = first["resources"]["duckdb"]
    planted = {" ".join(r["question"].lower().split()) for r in first["planted"]}
    prompts = {" ".join(r["prompt"].lower().split()) for r in db.rows("sft_dataset")}
    corpus = " ".join(" ".join(r["text"].lower().split()) for r in db.rows("raw_corpus"))
    assert not planted & prompts and not any(q in corpus for q in planted)
    duplicates = [q for q in db.rows("raw_quarantine") if q["kind"] == "duplicate"]
    report = db.rows("contamination_report")
    assert len(duplicates) == PLANTED // 2  # verbatim copies: the held-out file is read first and wins
    assert all("test.jsonl" in q["reason"] for q in duplicates)
    assert len(report) >= PLANTED // 2 and {r["method"] for r in report} <= {"key", "question", "ngram"}
    disguised = {r["question"] for r in first["planted"][PLANTED // 2:]}
    assert disguised <= {r["question"] for r in report}  # 100% of the disguised copies flagged
    assert all(r["eval_suite"] and r["evidence"] for r in report)


def test_nothing_changed_means_no_sensor_run_and_no_automation_requests(first):
    assert "unchanged" in _sensor(first).skip_message
    requested, cursor = _requested(first, None)
    again, cursor = _requested(first, cursor)
    assert not requested and not again
    _build(first, ["raw_problems"])  # an identical rebuild keeps the data version: no cascade
    assert not _requested(first, cursor)[0]
    first["cursor"] = cursor


@pytest.fixture(scope="module")
def second(first):
    train = first["raw"] / "train.jsonl"
    first["first_train_sha"] = file_sha256(train)
    with open(train, "a") as handle:
        handle.writelines(_lines(first["gsm8k"] / "train.jsonl", TRAIN_LINES, ADDED_LINES))
    result = _sensor(first)
    raw_readers = ["raw_problems", "raw_training_data"]  # both read the folder
    assert [r.asset_selection for r in result.run_requests] == [[dg.AssetKey(name) for name in raw_readers]]
    assert result.asset_events[0].tags["dagster/data_version"] == first["resources"]["raw_data"].snapshot().fingerprint
    _build(first, raw_readers)  # what the sensor's run request does
    requested, _ = _requested(first, first["cursor"])
    first["requested_after_change"] = requested
    first["generations"].append(_build(first))
    return first


def test_changed_raw_data_triggers_the_sensor_and_cascades_through_automation(second):
    assert {"eval_suites", "training_problems", "sft_dataset", "base_checkpoint", "instruct_checkpoint",
            "eval_instruct", "eval_report"} <= second["requested_after_change"]


def test_the_audit_tells_the_two_generations_apart(second):
    train = str((second["raw"] / "train.jsonl").resolve())
    instance = second["instance"]
    records = instance.fetch_materializations(dg.AssetKey("instruct_checkpoint"), limit=100, ascending=True).records
    versions = list(dict.fromkeys(r.asset_materialization.tags["dagster/data_version"] for r in records))
    assert len(versions) == 2  # generation 1, then generation 2
    backs = [upstream(instance, "instruct_checkpoint", version) for version in versions]
    raw_shas = [{s["sha256"] for r in back for s in r["sources"] if s["path"] == train} for back in backs]
    assert raw_shas[0] != raw_shas[1] and all(len(s) == 1 for s in raw_shas)
    first_gen = downstream_of_file(instance, train, second["first_train_sha"])
    everything = downstream_of_file(instance, train)
    first_checkpoints = {r["data_version"] for r in first_gen if r["asset"] == "instruct_checkpoint"}
    assert first_checkpoints == {versions[0]}  # the old file content reached only the first generation
    assert {r["asset"] for r in first_gen} >= {"raw_problems", "sft_dataset", "instruct_checkpoint", "eval_report"}
    assert {r["data_version"] for r in everything if r["asset"] == "instruct_checkpoint"} == set(versions)
    back = backs[0]
    assert all(r["git_commit"] and r["dagster_run_id"] and r["config_hash"] and r["code_version"] for r in back)
    assert all(r["inputs"] for r in back)  # the consumed input versions, from Dagster's tags
    assert all(r["mlflow_run_id"] for r in back if r["asset"] in ("instruct_checkpoint", "base_checkpoint"))


def test_lineage_command_answers_both_directions(second):
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"} | {"LLM_LINEAGE_HOME": str(second["home"])}
    command = [sys.executable, "-m", "pipelines.lineage"]
    back = subprocess.run([*command, "back", "eval_report"], env=env, capture_output=True, text=True, timeout=120)
    assert back.returncode == 0, back.stderr
    assert "raw_problems" in back.stdout and "train.jsonl" in back.stdout and "instruct_checkpoint" in back.stdout
    forward = subprocess.run([*command, "forward", str(second["raw"] / "train.jsonl"), "--json"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert forward.returncode == 0, forward.stderr
    assets = {json.loads(line)["asset"] for line in forward.stdout.splitlines()}
    assert {"raw_problems", "instruct_checkpoint", "eval_report", "lineage_report"} <= assets
    missing = subprocess.run([*command, "forward", "/nowhere.jsonl"], env=env, capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 1 and "no recorded materialization read" in missing.stderr


def test_lineage_report_asset_shows_the_path_to_raw_files(second):
    result = second["generations"][-1]
    metadata = result.asset_materializations_for_node("lineage_report")[0].metadata
    assert "raw_problems" in metadata["lineage"].value and "train.jsonl" in metadata["lineage"].value
    assert {f["path"] for f in metadata["raw_files"].value} == {
        str((second["raw"] / name).resolve()) for name in ("train.jsonl", "test.jsonl")}
