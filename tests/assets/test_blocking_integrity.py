"""Nothing is built on rows a blocking check rejected, whoever triggers the run (automation, a later
CLI or job run, a concurrent run), and a check judges exactly the rows its own run produced."""

import json
import multiprocessing

import dagster as dg
import pytest

from assets._tables import TABLE_VERSIONS, UpstreamNotPublished
from assets.datasets import eval_suites, sft_dataset, training_problems
from assets.raw import QUARANTINE_CHECK, raw_problems, raw_training_data
from pipelines.definitions import all_assets, all_checks, default_resources

DATASETS = ["eval_suites", "training_problems", "raw_corpus", "sft_dataset", "think_dataset"]


def _synthetic(seed: int = 7) -> dict:
    return {"ops": {"raw_problems": {"config": {"source": "synthetic", "seed": seed}}}}


def _garbage_config(path) -> dict:
    return {"ops": {"raw_problems": {"config": {"source": "jsonl", "jsonl_paths": [str(path)]}}}}


@pytest.fixture
def garbage_file(tmp_path):
    """Half the lines broken: far over the 5% quarantine limit, but with rows to train on."""
    good = [json.dumps({"question": f"Ann has {i} pens and buys 2 more. How many pens?",
                        "answer": f"{i} + 2 = {i + 2}\n#### {i + 2}"}) for i in range(60)]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(line for pair in zip(good, ["not json"] * 60) for line in pair) + "\n")
    return path


@pytest.fixture
def resources(lineage_home):
    return default_resources(lineage_home, profile="smoke", tracking_uri="sqlite:///unused.db")


def _check(result: dg.ExecuteInProcessResult, name: str = QUARANTINE_CHECK):
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


def _requested(defs: dg.Definitions, instance, cursor):
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    return {name for name in DATASETS if result.get_num_requested(dg.AssetKey(name))}, result.cursor


def test_automation_requests_nothing_downstream_of_a_rejected_raw_version(resources, garbage_file):
    defs = dg.Definitions(assets=all_assets, asset_checks=all_checks, resources=resources)
    instance = dg.DagsterInstance.ephemeral()
    first = dg.materialize([raw_problems, eval_suites, training_problems], resources=resources, instance=instance,
                           run_config=_synthetic())
    assert first.success
    _, cursor = _requested(defs, instance, None)

    rejected = dg.materialize([raw_problems], resources=resources, instance=instance,
                              run_config=_garbage_config(garbage_file), raise_on_error=False)
    assert not _check(rejected).passed
    requested, cursor = _requested(defs, instance, cursor)
    assert requested == set(), f"automation would build {requested} on a raw version its check rejected"

    accepted = dg.materialize([raw_problems], resources=resources, instance=instance, run_config=_synthetic(seed=8))
    assert _check(accepted).passed
    requested, _ = _requested(defs, instance, cursor)  # a new accepted version does flow on
    assert {"eval_suites", "training_problems"} <= requested


def test_a_later_run_refuses_to_build_on_a_rejected_version(resources, garbage_file):
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([raw_problems, raw_training_data, eval_suites, training_problems, sft_dataset], resources=resources,
                          instance=instance, run_config=_synthetic()).success
    duckdb = resources["duckdb"]
    accepted_rows = duckdb.count("raw_problems")
    sft_before = duckdb.rows("sft_dataset")

    rejected = dg.materialize([raw_problems], resources=resources, instance=instance,
                              run_config=_garbage_config(garbage_file), raise_on_error=False)
    assert not rejected.success and not _check(rejected).passed
    # the rejected rows were never published: the tables keep the accepted version, the rejects are inspectable
    assert duckdb.count("raw_problems") == accepted_rows
    assert duckdb.count("raw_quarantine_rejected") == 60

    # what `dagster asset materialize --select training_problems+` would run next
    later = dg.materialize([training_problems, sft_dataset], resources=resources, instance=instance,
                           raise_on_error=False)
    assert not later.success
    [failure] = [e for e in later.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.cause.message if failure.step_failure_data.error.cause else \
        failure.step_failure_data.error.message
    assert UpstreamNotPublished.__name__ in message and QUARANTINE_CHECK in message
    assert not later.asset_materializations_for_node("training_problems")
    assert duckdb.rows("sft_dataset") == sft_before


def _materialize_raw_in_child(resources: dict, config: dict, results) -> None:
    """One run of raw_problems in its own process (as concurrent Dagster runs are), reporting its verdict."""
    result = dg.materialize([raw_problems], resources=resources, run_config=config, raise_on_error=False)
    check = _check(result)
    [event] = result.asset_materializations_for_node("raw_problems")
    results.put((config["ops"]["raw_problems"]["config"]["source"], check.passed,
                 check.metadata["quarantined"].value, event.tags["dagster/data_version"]))


def test_concurrent_runs_each_judge_their_own_rows(resources, garbage_file):
    """Two raw_problems runs at once, garbage vs synthetic: before, a check read whichever rows the
    shared table held when it ran, so a garbage run could pass on the synthetic run's rows."""
    duckdb, fork = resources["duckdb"], multiprocessing.get_context("fork")
    for pair in range(3):
        results = fork.Queue()
        children = [fork.Process(target=_materialize_raw_in_child, args=(resources, config, results))
                    for config in (_garbage_config(garbage_file), _synthetic(seed=pair))]
        for child in children:
            child.start()
        outcomes = {source: rest for source, *rest in (results.get(timeout=300) for _ in children)}
        for child in children:
            child.join(timeout=60)
        assert outcomes["jsonl"][:2] == [False, 60], pair  # the garbage run failed on its own 60 bad lines
        assert outcomes["synthetic"][:2] == [True, 0], pair
        # only the accepted rows were published, stamped with the accepted run's version
        assert duckdb.query(f"SELECT data_version FROM {TABLE_VERSIONS} WHERE asset = 'raw_problems'") == [
            {"data_version": outcomes["synthetic"][2]}]
        assert duckdb.query("SELECT count(*) AS n FROM raw_problems WHERE source LIKE '%train.jsonl'") == [{"n": 0}]


def test_an_empty_raw_folder_fails_the_check(resources, lineage_home):
    """Before, 0 quarantined of 0 read was a 0% rate: the check passed and an empty lineage trained."""
    folder = lineage_home / "raw_data"
    folder.mkdir(parents=True)
    (folder / "train.jsonl").write_bytes(b"")
    (folder / "test.jsonl").write_bytes(b"")
    result = dg.materialize([raw_problems, eval_suites], resources=resources, raise_on_error=False)
    check = _check(result)
    assert not check.passed and "empty (0 lines read)" in check.description
    assert not result.asset_materializations_for_node("eval_suites")
