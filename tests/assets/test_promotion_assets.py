"""Gated promotion on the tiny profile: a real instruct model becomes the first champion, then a
deliberately undertrained retrain is evaluated on the same suites and blocked from promotion."""

import dagster as dg
import pytest

from assets._training import TrainOverrides, build_checkpoint
from assets.checkpoints import BaseConfig, InstructConfig
from assets.datasets import EvalSuitesConfig
from assets.evals import EvalConfig
from assets.promotion import instruct_candidate, instruct_champion, instruct_no_regression
from pipelines.definitions import all_assets, all_checks, default_resources
from resources import CheckpointStore, MLflowTracking
from tests.conftest import reconfigured

UPSTREAM = ["raw_problems", "raw_training_data", "eval_suites", "training_problems", "raw_corpus", "sft_dataset", "tokenizer",
            "base_checkpoint"]
PROMOTION = ["instruct_checkpoint", "eval_instruct", "eval_scores", "instruct_candidate", "instruct_champion"]
SUITE_SIZE, SAMPLES, UNDERTRAINED_STEPS = 40, 2, 3
BASE_STEPS = 200  # two thirds of the tiny profile's pretraining: enough for a champion that can be beaten
GATE = ("instruct_candidate", "no_regression_vs_champion")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, mlflow_server):
    resources = default_resources(tmp_path_factory.mktemp("promotion"), profile="tiny", tracking_uri=mlflow_server)
    resources["mlflow"] = reconfigured(resources["mlflow"], registered_model_prefix="promotion-test")
    return resources, dg.DagsterInstance.ephemeral()


def _materialize(resources, instance, selection, instruct_steps=None):
    config = {"eval_suites": EvalSuitesConfig(eval_suite_size=SUITE_SIZE), "eval_instruct": EvalConfig(samples=SAMPLES),
              "base_checkpoint": BaseConfig(max_steps=BASE_STEPS),
              "instruct_checkpoint": InstructConfig(sft=TrainOverrides(max_steps=instruct_steps)) if instruct_steps else None}
    config = {op: value for op, value in config.items() if op in selection and value}
    return dg.materialize([*all_assets, *all_checks], selection=selection, resources=resources, instance=instance,
                          run_config=dg.RunConfig(ops=config), raise_on_error=False)


def _gate(result):
    [evaluation] = [e for e in result.get_asset_check_evaluations()
                    if (e.asset_key.to_user_string(), e.check_name) == GATE]
    return evaluation


def test_first_champion_passes_then_a_worse_checkpoint_is_blocked(tiny):
    resources, instance = tiny
    registry, name = resources["mlflow"].registry(), "promotion-test-instruct"
    assert _materialize(resources, instance, UPSTREAM).success

    first = _materialize(resources, instance, PROMOTION)
    assert first.success and _gate(first).passed
    champion = registry.champion(name)
    assert champion.checkpoint_version == resources["checkpoints"].current("instruct_checkpoint").name
    # a model that solves some problems (0.1 measured here), so a regression beyond the 0.02 tolerance exists
    assert champion.scores["in_distribution"] >= 0.05, champion.scores

    worse = _materialize(resources, instance, PROMOTION, instruct_steps=UNDERTRAINED_STEPS)
    gate = _gate(worse)
    assert not gate.passed and not worse.success
    metadata = {k: v.value for k, v in gate.metadata.items()}
    assert metadata["champion_version"] == champion.version and metadata["candidate_version"] != champion.version
    assert "regression beyond tolerance" in metadata["verdict"]
    assert any(metadata["candidate_scores"][s] < metadata["champion_scores"][s] - metadata["tolerance"]
               for s in metadata["champion_scores"])
    assert not worse.asset_materializations_for_node("instruct_champion")  # the blocking check stopped it
    assert registry.champion(name).version == champion.version  # the alias did not move

    # a later run of the champion step alone (CLI `--select instruct_champion`, a job) is refused too
    later = _materialize(resources, instance, ["instruct_champion"])
    assert not later.success and not later.asset_materializations_for_node("instruct_champion")
    assert registry.champion(name).version == champion.version


class _Version(dg.Config):
    version: str


@dg.asset(name="instruct_checkpoint")
def _fake_instruct_checkpoint(context: dg.AssetExecutionContext, config: _Version, checkpoints: CheckpointStore,
                              mlflow: MLflowTracking):
    """A checkpoint published by the real ``build_checkpoint`` (files written instead of training)."""
    def build(staging, run):
        (staging / "model.safetensors").write_bytes(config.version.encode())
        return []

    return build_checkpoint(context, "instruct_checkpoint", config.version, {}, build, checkpoints, mlflow)


def test_the_gate_check_follows_a_math_suites_primary_grader(tmp_path):
    """Issue #17: on a LaTeX-answer suite ``exact`` reads nothing (0 for both checkpoints); the check gates it
    on math-verify, where the second checkpoint dropped, and records the grader of each suite."""
    resources = default_resources(tmp_path / "home", profile="smoke",
                                  tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    instance, duckdb = dg.DagsterInstance.ephemeral(), resources["duckdb"]
    duckdb.replace_table("eval_suites", [{"suite": s, "problem_id": f"{s}-{i}", "question": "q", "answer": "1",
                                          "answer_type": "math" if s == "math500" else "number"}
                                         for s in ("in_distribution", "math500") for i in range(2)])
    defs = [_fake_instruct_checkpoint, instruct_candidate, instruct_no_regression, instruct_champion]

    def run(version, math_verify):
        duckdb.replace_table("eval_scores", [
            {"variant": "instruct", "suite": suite, "grader": grader, "model_version": version,
             "pass_at_1": {"exact": 0.0 if suite == "math500" else 0.5, "math_verify": math_verify}[grader],
             "primary": grader == ("math_verify" if suite == "math500" else "exact")}
            for suite in ("in_distribution", "math500") for grader in ("exact", "math_verify")])
        dg.materialize([_fake_instruct_checkpoint], resources=resources, instance=instance,
                       run_config=dg.RunConfig(ops={"instruct_checkpoint": _Version(version=version)}))
        return dg.materialize(defs, selection=["instruct_candidate", "instruct_champion"], resources=resources,
                              instance=instance, raise_on_error=False)

    first = run("aaaa1111", math_verify=0.6)
    assert first.success and _gate(first).passed
    candidate = {k: v.value for k, v in first.asset_materializations_for_node("instruct_candidate")[0].metadata.items()}
    assert candidate["graders"] == {"in_distribution": "exact", "math500": "math_verify"}
    assert candidate["scores"] == {"in_distribution": 0.5, "math500": 0.6}

    worse = run("bbbb2222", math_verify=0.1)
    gate = _gate(worse)
    metadata = {k: v.value for k, v in gate.metadata.items()}
    assert not gate.passed and "math500" in metadata["verdict"] and "| math_verify |" in metadata["verdict"]
    assert metadata["graders"] == {"in_distribution": "exact", "math500": "math_verify"}
    assert not metadata["champion_reevaluated"]
    assert not worse.asset_materializations_for_node("instruct_champion")
