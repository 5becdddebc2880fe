"""Published models as the base / instruct / reasoning rows of the same report (issue #17): the paper
compares published checkpoints side by side; only the lineage's own could be evaluated. Tiny local
stand-ins with real tokenizers and chat templates play the published models, on subsets of the bundled
GSM8K and MATH-500, the base model few-shot."""

import json

import dagster as dg
import pytest

from assets.datasets import eval_suites, training_problems
from assets.evals import eval_base, eval_instruct, eval_reasoning, eval_report, eval_scores
from assets.raw import raw_problems
from pipelines.definitions import default_resources
from pipelines.training.base_model import BaseModelNotFound, model_content_version
from tests.fixtures.hf_models import save_llama3_instruct, save_qwen3_base

pytestmark = pytest.mark.slow  # three models generate on every suite


def test_published_models_are_evaluated_as_the_reports_variants(tmp_path):
    home = tmp_path / "lineage"
    resources = default_resources(home, profile="smoke", tracking_uri=f"sqlite:///{home}/mlflow.db")
    base, instruct = save_qwen3_base(tmp_path / "Qwen3-Base"), save_llama3_instruct(tmp_path / "Llama-3-Instruct")
    models = {"base": base, "instruct": instruct, "reasoning": base}
    ops = {f"eval_{variant}": {"config": {"published_model": str(path), "max_new_tokens": 4, "samples": 1}}
           for variant, path in models.items()}
    ops["eval_base"]["config"] |= {"few_shot": 2, "compare_shots": [0]}  # few-shot CoT, zero-shot beside it
    ops["eval_suites"] = {"config": {"builtin_suites": ["gsm8k", "math500"], "builtin_limit": 8}}
    result = dg.materialize([raw_problems, eval_suites, training_problems, eval_base, eval_instruct, eval_reasoning,
                             eval_scores, eval_report], resources=resources, run_config={"ops": ops},
                            selection=["raw_problems", "eval_suites", "training_problems", "eval_base", "eval_instruct",
                                       "eval_reasoning", "eval_scores", "eval_report"])
    assert result.success
    store = resources["duckdb"]
    versions = {r["variant"]: r["model_version"] for r in
                store.query("SELECT DISTINCT variant, model_version FROM eval_generations")}
    assert versions == {v: f"published-{model_content_version(p)[:16]}" for v, p in models.items()}
    scored = {(r["variant"], r["suite"]) for r in store.query("SELECT DISTINCT variant, suite FROM eval_scores")}
    assert {(v, s) for v in models for s in ("gsm8k", "math500", "in_distribution")} <= scored
    report = result.asset_materializations_for_node("eval_report")[-1].metadata["report"].value
    assert all(f"| {variant} |" in report for variant in models) and "base = cot (k=1, 2-shot)" in report
    assert "math500 = `math_verify`" in report and "gsm8k pass@1" in report
    prompts = {(r["variant"], r["few_shot"]): r["prompt"] for r in store.query(
        "SELECT variant, few_shot, any_value(prompt) AS prompt FROM eval_generations GROUP BY ALL")}
    assert prompts[("base", 2)].count("Question:") == 3 and prompts[("base", 0)].count("Question:") == 1
    assert prompts[("instruct", 0)].count("Question:") == 0 and len(prompts) == 4
    [ids] = store.query("SELECT count(*) = count(DISTINCT sample_id) AS ok FROM eval_generations")
    assert ids["ok"]  # the 0-shot and 2-shot samples of an item are different rows
    assert "| variant | suite | 0-shot | 2-shot |" in report and "| base | gsm8k |" in report
    registry = resources["mlflow"].registry()  # each published model's identity and scores, in the registry
    for variant, path in models.items():
        version = registry.find(f"llm-lineage-published-{variant}", versions[variant])
        assert (version.tags["published_model"], version.tags["sha256"]) == (str(path), model_content_version(path))
        assert set(version.scores) == {s for v, s in scored if v == variant}
        assert json.loads(version.tags["graders"])["math500"] == "math_verify"
    [audit] = result.asset_materializations_for_node("eval_instruct")
    assert audit.metadata["lineage/sources"].value == [{"published_model": str(instruct), "path": str(instruct),
                                                         "sha256": model_content_version(instruct)}]


def test_a_missing_published_model_is_named_in_the_error(tmp_path):
    home = tmp_path / "lineage"
    resources = default_resources(home, profile="smoke", tracking_uri=f"sqlite:///{home}/mlflow.db")
    missing = tmp_path / "nowhere"
    result = dg.materialize([raw_problems, eval_suites, eval_instruct], resources=resources, raise_on_error=False,
                            selection=["raw_problems", "eval_suites", "eval_instruct"],
                            run_config={"ops": {"eval_instruct": {"config": {"published_model": str(missing)}}}})
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert f"eval_instruct.published_model: no such directory: {missing}" in str(failure.event_specific_data.error)
    assert BaseModelNotFound.__name__ in str(failure.event_specific_data.error)
