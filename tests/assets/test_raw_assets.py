"""The raw and dataset assets through real Dagster materializations, on ingested JSONL files."""

import json

import dagster as dg

from assets.datasets import DISJOINT_CHECK, eval_suites, raw_corpus, sft_dataset, training_problems
from assets.raw import raw_data_files, raw_problems, raw_training_data
from pipelines.definitions import default_resources


def _metadata(result, asset_name):
    events = result.asset_materializations_for_node(asset_name)
    return {key: value.value for key, value in events[-1].metadata.items()}


UPSTREAM_OF_SFT = ["raw_problems", "raw_training_data", "eval_suites", "training_problems", "raw_corpus", "sft_dataset"]


def _check(result, name):
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


def _jsonl_config(paths):
    return {"ops": {"raw_problems": {"config": {"source": "jsonl", "jsonl_paths": [str(p) for p in paths]}}}}


def test_malformed_jsonl_is_quarantined_and_accounted_for(tmp_path, lineage_home):
    path = tmp_path / "train.jsonl"
    good = [{"question": f"Ann has {i} pens and buys 1. How many?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"}
            for i in range(5)]
    lines = [json.dumps(row) for row in good] + ["not json", json.dumps({"question": "Q"}),
                                                 json.dumps({"question": "Q2", "answer": "42"})]
    path.write_text("\n".join(lines) + "\n")
    resources = default_resources(lineage_home, profile="smoke", tracking_uri="sqlite:///unused.db")
    run_config = _jsonl_config([path])  # 3 of 8 lines broken: allowed here, the accounting is under test
    run_config["ops"]["raw_problems"]["config"]["max_quarantine_rate"] = 1.0
    result = dg.materialize([raw_data_files, raw_problems], resources=resources, run_config=run_config,
                            selection=["raw_problems"])
    assert result.success
    metadata = _metadata(result, "raw_problems")
    assert (metadata["lines_read"], metadata["kept"], metadata["quarantined"]) == (8, 5, 3)
    assert metadata["quarantine_reasons"] == {"not_json": 1, "missing_field": 1, "no_final_answer": 1}
    quarantine = resources["duckdb"].rows("raw_quarantine")
    assert sorted((q["line"], q["kind"]) for q in quarantine) == [
        (6, "not_json"), (7, "missing_field"), (8, "no_final_answer")]
    assert all(q["file"] == str(path) for q in quarantine)
    assert resources["duckdb"].count("raw_problems") == 5


def test_real_gsm8k_flows_into_datasets_and_an_in_distribution_suite(gsm8k_dir, lineage_home):
    resources = default_resources(lineage_home, profile="smoke", tracking_uri="sqlite:///unused.db")
    run_config = _jsonl_config([gsm8k_dir / "train.jsonl", gsm8k_dir / "test.jsonl"])
    result = dg.materialize([raw_data_files, raw_problems, raw_training_data, eval_suites, training_problems,
                             raw_corpus, sft_dataset],
                            resources=resources, run_config=run_config, selection=UPSTREAM_OF_SFT)
    assert result.success
    duckdb = resources["duckdb"]
    train_rows = duckdb.query("SELECT count(*) AS n FROM raw_problems WHERE split = 'train'")[0]["n"]
    removed = duckdb.count("contamination_report")
    assert duckdb.count("sft_dataset") == duckdb.count("raw_corpus") == train_rows - removed > 7000
    suites = {r["suite"]: r["n"] for r in duckdb.query("SELECT suite, count(*) AS n FROM eval_suites GROUP BY 1")}
    assert suites == {"in_distribution": 24, "perturbed": 24}  # no templates: wording twins, no domain shift
    check = _check(result, DISJOINT_CHECK)
    assert check.passed and check.metadata["eval_items"].value == 48


def test_bundled_benchmarks_by_name_and_a_mapped_file_plug_in_as_eval_suites(lineage_home, tmp_path):
    numbers = tmp_path / "numbers.jsonl"
    numbers.write_text("".join(json.dumps({"q": f"What is {i} + {i}?", "a": f"{2 * i} (apples)"}) + "\n"
                               for i in range(30)) + "not json\n")
    resources = default_resources(lineage_home, profile="smoke", tracking_uri="sqlite:///unused.db")
    config = {"builtin_suites": ["gsm8k", "math500"], "builtin_limit": 24,
              "extra_suites": [{"name": "plain_numbers", "path": str(numbers), "question_field": "q",
                                "answer_field": "a", "answer_format": "number"}]}
    result = dg.materialize([raw_data_files, raw_problems, eval_suites, training_problems],
                            resources=resources, selection=["raw_problems", "eval_suites", "training_problems"],
                            run_config={"ops": {"eval_suites": {"config": config}}})
    assert result.success and _check(result, DISJOINT_CHECK).passed
    duckdb = resources["duckdb"]
    sizes = {r["suite"]: r["n"] for r in duckdb.query("SELECT suite, count(*) AS n FROM eval_suites GROUP BY 1")}
    assert sizes == {"in_distribution": 24, "perturbed": 24, "domain_shift": 24, "gsm8k": 24, "math500": 24,
                     "plain_numbers": 30}
    types = {r["suite"]: r["answer_type"] for r in duckdb.query("SELECT DISTINCT suite, answer_type FROM eval_suites")}
    assert types["math500"] == "math" and types["gsm8k"] == types["plain_numbers"] == "number"
    assert duckdb.query("SELECT answer FROM eval_suites WHERE question = 'What is 4 + 4?'") == [{"answer": "8"}]
    assert [(q["line"], q["kind"]) for q in duckdb.rows("eval_suite_quarantine")] == [(31, "not_json")]
    [audit] = result.asset_materializations_for_node("eval_suites")
    assert {s["path"] for s in audit.metadata["lineage/sources"].value} >= {str(numbers)}  # suite files in the audit


def test_a_suite_that_ends_empty_fails_the_blocking_check_and_nothing_is_published(lineage_home, tmp_path):
    """A MATH-style file read with the GSM8K mapping kept 0 of 20 items and the suite vanished silently."""
    math_style = tmp_path / "math.jsonl"
    math_style.write_text("".join(json.dumps({"problem": f"Solve x = {i}/3.", "solution": f"$\\boxed{{\\frac{{{i}}}{{3}}}}$"})
                                  + "\n" for i in range(20)))
    resources = default_resources(lineage_home, profile="smoke", tracking_uri="sqlite:///unused.db")
    config = {"extra_suites": [{"name": "mathy", "path": str(math_style), "question_field": "problem",
                                "answer_field": "solution"}]}  # gsm8k mapping: no '####' anywhere
    result = dg.materialize([raw_data_files, raw_problems, eval_suites], resources=resources, raise_on_error=False,
                            selection=["raw_problems", "eval_suites"],
                            run_config={"ops": {"eval_suites": {"config": config}}})
    check = _check(result, "eval_suites_complete")
    assert not result.success and not check.passed
    assert check.description == "suite mathy is empty (20 records read, 20 quarantined)"
    assert "eval_suites" not in resources["duckdb"].tables()
    assert len(resources["duckdb"].rows("eval_suite_quarantine_rejected")) == 20
    fixed = {"extra_suites": [{**config["extra_suites"][0], "answer_format": "boxed", "answer_type": "math"}]}
    again = dg.materialize([raw_data_files, raw_problems, eval_suites], resources=resources,
                           selection=["raw_problems", "eval_suites"], run_config={"ops": {"eval_suites": {"config": fixed}}})
    assert again.success and resources["duckdb"].count("eval_suites") - 3 * 24 == 20


def test_the_raw_folder_is_observed_by_the_first_build(tmp_path, lineage_home):
    """raw_data_files showed "Never observed" until the sensor saw a change: the first build now records
    the version it read, so the UI knows it and staleness is computed against it."""
    resources = default_resources(lineage_home, profile="smoke", tracking_uri="sqlite:///unused.db")
    folder = resources["raw_data"].snapshot()
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([raw_data_files, raw_problems], resources=resources, instance=instance,
                          selection=["raw_problems"]).success
    [observation] = instance.fetch_observations(raw_data_files.key, limit=1).records
    assert observation.asset_observation.tags["dagster/data_version"] == folder.fingerprint


def test_a_suites_system_prompt_and_tolerance_are_columns_of_its_items(lineage_home, tmp_path):
    """The Launchpad's extra_suites took no system prompt nor tolerance, and eval_suites rows had no place
    for them."""
    numbers = tmp_path / "numbers.jsonl"
    numbers.write_text("".join(json.dumps({"q": f"What is {i} + {i}?", "a": str(2 * i)}) + "\n" for i in range(10)))
    resources = default_resources(lineage_home, profile="smoke", tracking_uri="sqlite:///unused.db")
    config = {"extra_suites": [{"name": "terse", "path": str(numbers), "question_field": "q", "answer_field": "a",
                                "answer_format": "number", "system_prompt": "Answer with a number only.",
                                "rel_tol": 0.01}]}
    result = dg.materialize([raw_data_files, raw_problems, eval_suites], resources=resources,
                            selection=["raw_problems", "eval_suites"], run_config={"ops": {"eval_suites": {"config": config}}})
    assert result.success
    rows = resources["duckdb"].query("SELECT DISTINCT suite, system_prompt, rel_tol FROM eval_suites")
    assert {r["suite"]: (r["system_prompt"], r["rel_tol"]) for r in rows} == {
        "in_distribution": (None, None), "perturbed": (None, None), "domain_shift": (None, None),
        "terse": ("Answer with a number only.", 0.01)}
