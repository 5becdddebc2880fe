"""The raw and dataset assets through real Dagster materializations, on ingested JSONL files."""

import json

import dagster as dg

from assets.datasets import eval_suites, eval_suites_disjoint_from_training, sft_dataset
from assets.raw import raw_corpus, raw_problems
from pipelines.definitions import default_resources


def _metadata(result, asset_name):
    events = result.asset_materializations_for_node(asset_name)
    return {key: value.value for key, value in events[-1].metadata.items()}


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
    result = dg.materialize([raw_problems], resources=resources, run_config=_jsonl_config([path]))
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
    result = dg.materialize([raw_problems, raw_corpus, sft_dataset, eval_suites, eval_suites_disjoint_from_training],
                            resources=resources, run_config=run_config)
    assert result.success
    duckdb = resources["duckdb"]
    train_rows = duckdb.query("SELECT count(*) AS n FROM raw_problems WHERE split = 'train'")[0]["n"]
    assert duckdb.count("sft_dataset") == duckdb.count("raw_corpus") == train_rows > 7000
    suites = duckdb.query("SELECT suite, count(*) AS n FROM eval_suites GROUP BY suite")
    assert suites == [{"suite": "in_distribution", "n": 24}]  # no templates → no perturbed twins
    check = result.get_asset_check_evaluations()[0]
    assert check.passed and check.metadata["eval_items_checked"].value == 24


def test_gsm8k_test_plugs_in_as_an_extra_eval_suite(gsm8k_dir, lineage_home, tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "What is 2 + 2?", "answer": "4"}\nnot json\n')
    resources = default_resources(lineage_home, profile="smoke", tracking_uri="sqlite:///unused.db")
    extra = [{"name": "gsm8k", "path": str(gsm8k_dir / "test.jsonl")},
             {"name": "plain_numbers", "path": str(broken), "answer_format": "number"}]
    result = dg.materialize([raw_problems, eval_suites, eval_suites_disjoint_from_training], resources=resources,
                            run_config={"ops": {"eval_suites": {"config": {"extra_suites": extra}}}})
    assert result.success and result.get_asset_check_evaluations()[0].passed
    duckdb = resources["duckdb"]
    sizes = {r["suite"]: r["n"] for r in duckdb.query("SELECT suite, count(*) AS n FROM eval_suites GROUP BY 1")}
    assert sizes == {"in_distribution": 24, "perturbed": 24, "domain_shift": 24, "gsm8k": 24, "plain_numbers": 1}
    natalia = duckdb.query("SELECT answer FROM eval_suites WHERE question LIKE 'Janet%ducks%'")
    assert natalia == [{"answer": "18"}]  # GSM8K test line 1, gold parsed from '#### 18'
    assert [(q["line"], q["kind"]) for q in duckdb.rows("eval_suite_quarantine")] == [(2, "not_json")]
