"""The whole lineage, raw data to eval report, on the smoke profile: real Dagster, TRL, MLflow, DuckDB."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from pipelines.definitions import PROJECT_ROOT, all_assets, all_checks, default_resources
from pipelines.profiles import SMOKE

CHECKPOINTS = ("base_checkpoint", "instruct_checkpoint", "think_sft_checkpoint", "reasoning_checkpoint",
               "reasoning_round_1_checkpoint")  # the smoke profile's one self-improvement round
EVALS = ("eval_base", "eval_instruct", "eval_reasoning_round_0", "eval_reasoning")
# the assets with an MLflow run of their own (a candidate registers a logged model of its checkpoint's training run)
TRAINED_AND_EVALUATED = {"tokenizer", *CHECKPOINTS, *EVALS, "eval_scores", "eval_report"}
VARIANTS = ("base", "instruct", "reasoning_round_0", "reasoning")  # the report's order
SUITES = ("in_distribution", "perturbed", "domain_shift")
GRADERS = ("exact", "flexible", "math_verify", "strict")


@pytest.fixture(scope="module")
def lineage(materialized_lineage):
    """One materialization of the whole graph per session (tests/conftest.py), also served by the UI tests."""
    return materialized_lineage.result, materialized_lineage.resources


def test_every_asset_materializes_and_checks_pass(lineage):
    result, _ = lineage
    assert result.success
    materialized = {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}
    expected = {key.to_user_string() for a in all_assets if isinstance(a, dg.AssetsDefinition) for key in a.keys}
    assert materialized == expected
    checks = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    declared = [key for c in all_checks for key in c.check_keys] + \
        [spec.key for a in all_assets if isinstance(a, dg.AssetsDefinition) for spec in a.check_specs]
    assert checks == {(key.asset_key.to_user_string(), key.name): True for key in declared}
    assert ("instruct_candidate", "no_regression_vs_champion") in checks  # passes: the first champion


def test_instruct_and_reasoning_are_registered_and_promoted(lineage):
    result, resources = lineage
    registry = resources["mlflow"].registry()
    trained = {r.data.tags["dagster.asset_key"]: r.info.run_id for r in resources["mlflow"].runs(
        f"tags.`dagster.run_id` = '{result.run_id}'")}
    # the reasoning champion is the final reasoning model: the last self-improvement round's checkpoint
    for variant, checkpoint in (("instruct", "instruct_checkpoint"), ("reasoning", "reasoning_round_1_checkpoint")):
        champion = registry.champion(f"llm-lineage-{variant}")
        assert champion is not None and champion.checkpoint_version == resources["checkpoints"].current(checkpoint).name
        assert set(champion.scores) == set(SUITES) and champion.tags["gate_passed_against"] == "none"
        assert champion.run_id == trained[checkpoint] and champion.model_id  # the training run's model
        assert champion.tags["dagster.asset_key"] == checkpoint
        assert champion.tags["dagster.run_id"] == result.run_id


def test_rematerializing_with_nothing_changed_reuses_every_eval_output(lineage):
    result, resources = lineage
    definitions = dg.Definitions(assets=all_assets, asset_checks=all_checks, resources=resources)
    again = definitions.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=dg.DagsterInstance.ephemeral())
    assert again.success
    for name in (*CHECKPOINTS, *EVALS, "eval_scores", "eval_report"):
        assert again.asset_materializations_for_node(name)[0].metadata["reused"].value is True, name
    new_runs = resources["mlflow"].runs(f"tags.`dagster.run_id` = '{again.run_id}'")
    assert not new_runs  # nothing retrained, regenerated, re-graded or re-registered
    assert resources["mlflow"].registry().champion("llm-lineage-instruct").version == "1"


def test_every_checkpoint_directory_loads_with_transformers(lineage):
    _, resources = lineage
    AutoTokenizer.from_pretrained(resources["checkpoints"].current("tokenizer"))
    for name in CHECKPOINTS:
        directory = resources["checkpoints"].current(name)
        model = AutoModelForCausalLM.from_pretrained(directory)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        assert model.config.model_type == "qwen3" and model.config.vocab_size == len(tokenizer)


def test_duckdb_tables_have_the_expected_rows(lineage):
    _, resources = lineage
    duckdb = resources["duckdb"]
    assert duckdb.count("raw_problems") == SMOKE.data.n_problems
    assert duckdb.count("raw_quarantine") == 0
    train = duckdb.query("SELECT count(*) AS n FROM raw_problems WHERE split = 'train'")[0]["n"]
    removed = duckdb.count("contamination_report")
    for table in ("training_problems", "raw_corpus", "sft_dataset", "think_dataset", "preference_dataset"):
        assert duckdb.count(table) == train - removed, table
    suites = {r["suite"]: r["n"] for r in duckdb.query("SELECT suite, count(*) AS n FROM eval_suites GROUP BY 1")}
    assert suites == {name: SMOKE.data.eval_suite_size for name in ("in_distribution", "perturbed", "domain_shift")}
    kinds = duckdb.query("SELECT perturbation, count(*) AS n FROM eval_suites WHERE suite = 'perturbed' GROUP BY 1")
    assert {r["perturbation"] for r in kinds} == {"numbers", "order", "distractor"}
    drops = duckdb.rows("eval_perturbation_drops")
    assert {(r["variant"], r["perturbation"]) for r in drops} == {
        (v, k) for v in VARIANTS for k in ("numbers", "order", "distractor")}
    per_variant = duckdb.query("SELECT variant, count(*) AS n FROM eval_generations GROUP BY 1 ORDER BY 1")
    samples = {"base": SMOKE.eval.base_branches, "instruct": SMOKE.eval.instruct_samples}  # the rest: reasoning
    assert per_variant == [{"variant": v, "n": sum(suites.values()) * samples.get(v, SMOKE.eval.reasoning_samples)}
                           for v in sorted(VARIANTS)]
    seeds = duckdb.query("SELECT DISTINCT variant, seed FROM eval_generations WHERE variant = 'reasoning' ORDER BY 2")
    assert [r["seed"] for r in seeds] == list(range(SMOKE.eval.reasoning_samples))  # one seed per sample, recorded


def test_scores_cover_every_variant_suite_and_grader(lineage):
    _, resources = lineage
    scores = resources["duckdb"].rows("eval_scores")
    assert {(r["variant"], r["suite"], r["grader"]) for r in scores} == {
        (v, s, g) for v in VARIANTS for s in SUITES for g in GRADERS}
    assert all(0.0 <= r["pass_at_1"] <= r["pass_at_k"] <= 1.0 and r["mean_output_tokens"] > 0 for r in scores)
    graded = resources["duckdb"].count("eval_grades")
    assert graded == len(GRADERS) * resources["duckdb"].count("eval_generations")


def test_eval_report_has_every_section_and_is_logged_to_mlflow(lineage):
    from pipelines.evaluation.reporting import SECTIONS

    result, resources = lineage
    report = result.asset_materializations_for_node("eval_report")[0].metadata["report"].value
    assert all(section in report for section in SECTIONS)
    assert all(f"| {variant} |" in report for variant in VARIANTS)
    assert report.count("data:image/png;base64,") == 4  # the rounds' plot too
    assert "## Self-improvement rounds" in report and "| round 1 (final) |" in report
    runs = {r.data.tags["dagster.asset_key"]: r for r in resources["mlflow"].runs(
        f"tags.`dagster.run_id` = '{result.run_id}'")}
    client = resources["mlflow"].client()
    report_files = {a.path for a in client.list_artifacts(runs["eval_report"].info.run_id)}
    assert {"report.md", "report.html", "pass_at_k_curves.png"} <= report_files
    assert "eval_scores_summary.json" in {a.path for a in client.list_artifacts(runs["eval_scores"].info.run_id)}
    summary = result.asset_materializations_for_node("eval_scores")[0].metadata["summary"]
    assert len(summary.records) == len(VARIANTS) * len(SUITES) * len(GRADERS)
    assert all("samples.jsonl" in {a.path for a in client.list_artifacts(runs[name].info.run_id)} for name in EVALS)


def test_mlflow_holds_a_finished_run_per_training_and_eval_asset(lineage):
    result, resources = lineage
    runs = resources["mlflow"].runs(f"tags.`dagster.run_id` = '{result.run_id}'")
    by_asset = {r.data.tags["dagster.asset_key"]: r for r in runs}
    assert set(by_asset) == TRAINED_AND_EVALUATED
    assert all(r.info.status == "FINISHED" for r in runs)
    assert by_asset["reasoning_checkpoint"].data.metrics["dpo/steps"] == SMOKE.dpo.max_steps
    assert by_asset["eval_instruct"].data.params["variant"] == "instruct"
    assert by_asset["eval_base"].data.params["method"] == "cot"
    link = result.asset_materializations_for_node("base_checkpoint")[0].metadata["mlflow_run"].value
    assert by_asset["base_checkpoint"].info.run_id in link


# The paper's protocol on real benchmarks (issue #17): subsets of the bundled GSM8K and MATH-500 beside the
# generated suites, every variant zero-shot and few-shot, as a user would write it in a run config file.
PAPER_PROTOCOL = {"ops": {"eval_suites": {"config": {"builtin_suites": ["gsm8k", "math500"], "builtin_limit": 6}},
                          "eval_base": {"config": {"few_shot": 2, "compare_shots": [0]}},
                          "eval_instruct": {"config": {"few_shot": 2, "compare_shots": [0]}},
                          "eval_reasoning": {"config": {"compare_shots": [2]}}}}
PROTOCOL_SUITES = (*SUITES, "gsm8k", "math500")


def test_cli_materialize_uses_the_default_executor_and_sqlite_store(tmp_path):
    """`dagster asset materialize` as `make demo` runs it: multiprocess executor, SQLite MLflow, pools; with a
    run config file that asks for the paper's protocol on GSM8K and MATH-500 subsets."""
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "LLM_LINEAGE_HOME": str(tmp_path / "lineage"),
           "LLM_LINEAGE_PROFILE": "smoke"}
    env.pop("MLFLOW_TRACKING_URI", None)
    config = tmp_path / "protocol.yaml"
    config.write_text(json.dumps(PAPER_PROTOCOL))  # JSON is YAML
    completed = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "--select", "*",
         "-m", "pipelines.definitions", "-c", str(config)], cwd=PROJECT_ROOT, env=env, capture_output=True,
        text=True, timeout=900)
    log = completed.stdout + completed.stderr
    assert completed.returncode == 0, log[-4000:]
    assert "database is locked" not in log and "Could not set lock" not in log
    resources = default_resources(tmp_path / "lineage", profile="smoke")
    assert resources["mlflow"].tracking_uri.startswith("sqlite:///")
    assert {r.data.tags["dagster.asset_key"] for r in resources["mlflow"].runs()} == TRAINED_AND_EVALUATED
    scored = {(r["variant"], r["suite"], r["few_shot"], r["headline"]) for r in resources["duckdb"].query(
        "SELECT DISTINCT variant, suite, few_shot, headline FROM eval_scores")}
    compared = {(v, s, n, n == headline) for v, headline in (("base", 2), ("instruct", 2), ("reasoning", 0))
                for s in PROTOCOL_SUITES for n in (0, 2)}
    branch = {("reasoning_round_0", s, 0, True) for s in PROTOCOL_SUITES}  # the round evals: zero-shot only
    assert scored == compared | branch
    assert resources["duckdb"].count("eval_scores") == len(scored) * len(GRADERS)
    report = (resources["checkpoints"].current("eval_report") / "report.md").read_text()
    assert "math500 = `math_verify`" in report and "gsm8k = `exact`" in report
    assert "| variant | suite | 0-shot | 2-shot |" in report and "| reasoning | math500 |" in report
    assert "base = cot (k=2, 2-shot)" in report and "reasoning = sample (k=2, 0-shot)" in report
