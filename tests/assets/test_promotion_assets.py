"""Gated promotion on the tiny profile: a real instruct model becomes the first champion, then a
deliberately undertrained retrain is evaluated on the same suites and blocked from promotion."""

import dagster as dg
import pytest

from assets._training import TrainOverrides
from assets.checkpoints import BaseConfig, InstructConfig
from assets.datasets import EvalSuitesConfig
from assets.evals import EvalConfig
from pipelines.definitions import all_assets, all_checks, default_resources
from tests.conftest import reconfigured

UPSTREAM = ["raw_problems", "raw_training_data", "eval_suites", "training_problems", "raw_corpus", "sft_dataset", "tokenizer",
            "base_checkpoint"]
PROMOTION = ["instruct_checkpoint", "eval_instruct", "eval_scores", "instruct_candidate", "instruct_champion"]
SUITE_SIZE, SAMPLES, UNDERTRAINED_STEPS = 40, 2, 3
BASE_STEPS = 200  # half the tiny profile's pretraining: enough for a champion that can be beaten
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
