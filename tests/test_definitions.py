import os
import subprocess
import sys

import dagster as dg

from pipelines.definitions import PROJECT_ROOT, defs, profile_version

TRAINING_ASSETS = {"base_checkpoint", "instruct_checkpoint", "think_sft_checkpoint", "reasoning_checkpoint"}


def test_definitions_load_with_the_five_groups():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert set(groups.values()) == {"raw", "datasets", "checkpoints", "self_improvement", "evals"}
    assert groups["eval_report"] == "evals" and groups["reasoning_checkpoint"] == "checkpoints"
    assert groups["reasoning_round_1_samples"] == groups["reasoning_round_1_checkpoint"] == "self_improvement"


def test_every_asset_has_a_description():
    """The UI shows it on every asset page; a ``__doc__`` set after the decorator never reached it."""
    graph = defs.resolve_asset_graph()
    missing = sorted(key.to_user_string() for key in graph.get_all_asset_keys() if not graph.get(key).description)
    assert missing == []


def test_training_and_generation_share_the_gpu_pool():
    graph = defs.resolve_asset_graph()
    pools = {key.to_user_string(): graph.get(key).pools for key in graph.get_all_asset_keys()}
    assert all(pools[name] == {"gpu"} for name in TRAINING_ASSETS | {"eval_base", "eval_reasoning"})
    assert not pools["eval_report"] and not pools["eval_scores"]


def test_the_executor_holds_pool_steps_to_the_pool_limit_within_a_run():
    """Within a run the executor's own tag limit admits one model-running step at a time, so no step
    of the run waits out Dagster's pool-claim backoff; every pool step carries the tag it limits on."""
    from assets._pools import ACCELERATOR_POOL, POOL_TAG

    job = defs.resolve_implicit_global_asset_job_def()
    config = job.executor_def.config_schema.resolve_config({}).value["config"]
    assert config["tag_concurrency_limits"] == [{"key": POOL_TAG, "value": ACCELERATOR_POOL, "limit": 1}]
    tagged = {node.name for node in job.graph.node_dict.values() if node.tags.get(POOL_TAG) == ACCELERATOR_POOL}
    pooled = {node.name for node in job.graph.node_dict.values() if node.definition.pool == ACCELERATOR_POOL}
    assert tagged == pooled and TRAINING_ASSETS <= pooled


def test_steps_fork_from_a_preloaded_server():
    """Each step is its own process, forked from a server that imported the heavy modules once. The
    fork server skips a preload module it cannot import without a word, so a typo would silently
    bring back the ~3 s import per step: every listed module must resolve."""
    import importlib.util

    from pipelines.runtime.executor import PRELOADED_MODULES
    from pipelines.runtime.fork_server import SERVER_IMPORTS

    executor = defs.resolve_implicit_global_asset_job_def().executor_def
    config = executor.config_schema.resolve_config({}).value["config"]
    assert config["start_method"] == {"forkserver": {"preload_modules": list(PRELOADED_MODULES)}}
    assert "pipelines.definitions" in SERVER_IMPORTS
    assert [m for m in (*PRELOADED_MODULES, *SERVER_IMPORTS) if importlib.util.find_spec(m) is None] == []


FORKED_STEP_PROBE = """
import gc, multiprocessing
from pipelines.runtime.fork_server import PRELOADED_MODULES

def report(queue):
    import sys
    from dagster_shared.utils.cached_method import get_cached_method_cache
    from pipelines.definitions import defs
    queue.put((gc.isenabled(), gc.get_freeze_count(), "mlflow.store.tracking.sqlalchemy_store" in sys.modules,
               "torch" in sys.modules,
               len(get_cached_method_cache(defs, "get_repository_def"))))

if __name__ == "__main__":  # a file, not -c: the forked step imports this module to find report()
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOADED_MODULES))
    queue = context.Queue()
    step = context.Process(target=report, args=(queue,))
    step.start()
    enabled, frozen, preloaded, torch, resolved = queue.get(timeout=240)
    step.join()
    print(enabled, frozen > 100_000, preloaded, torch, resolved)
"""


def test_a_forked_step_inherits_the_preloaded_heap_frozen_and_collects_its_own_garbage(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(FORKED_STEP_PROBE)
    completed = subprocess.run([sys.executable, str(probe)], cwd=PROJECT_ROOT, capture_output=True, text=True,
                               timeout=300, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert completed.returncode == 0, completed.stderr[-3000:]
    # preloaded: the heap frozen, MLflow's store, the repository built; not torch
    assert completed.stdout.split() == ["True", "True", "True", "False", "1"]


def test_lineage_order_reasoning_branch_is_think_sft_then_preferences():
    graph = defs.resolve_asset_graph()

    def parents(name):
        return {key.to_user_string() for key in graph.get(dg.AssetKey(name)).parent_keys}

    assert parents("think_sft_checkpoint") == {"base_checkpoint", "think_dataset"}
    assert parents("reasoning_checkpoint") == {"think_sft_checkpoint", "think_dataset", "preference_dataset"}
    assert "think_sft_checkpoint" in parents("preference_dataset")  # on-policy pairs sample that model


def test_self_improvement_rounds_chain_from_the_reasoning_checkpoint_to_the_gated_final_model():
    from assets.self_improvement import build_rounds

    graph = defs.resolve_asset_graph()

    def parents(name):
        return {key.to_user_string() for key in graph.get(dg.AssetKey(name)).parent_keys}

    # round 1 samples round 0 (reasoning_checkpoint) and trains from it; the last round is the final model
    assert parents("reasoning_round_1_samples") == {"reasoning_checkpoint", "think_dataset", "eval_suites"}
    assert parents("reasoning_round_1_checkpoint") == {"reasoning_checkpoint", "reasoning_round_1_samples"}
    assert "reasoning_round_1_checkpoint" in parents("eval_reasoning")
    assert "reasoning_round_1_checkpoint" in parents("reasoning_candidate")  # the champion gate judges the final round
    assert "reasoning_checkpoint" in parents("eval_reasoning_round_0")
    assert {"eval_reasoning_round_0", "eval_reasoning"} <= parents("eval_scores")
    # more rounds: each samples the one before it
    assets, by_round = build_rounds(3)
    names = [key.to_user_string() for a in assets for key in a.keys]
    assert names == [f"reasoning_round_{k}_{kind}" for k in (1, 2, 3) for kind in ("samples", "checkpoint")]
    assert {key.to_user_string() for key in assets[4].dependency_keys} >= {"reasoning_round_2_checkpoint"}
    assert [c.key.to_user_string() for c in by_round] == ["reasoning_checkpoint"] + [
        f"reasoning_round_{k}_checkpoint" for k in (1, 2, 3)]


def test_workspace_yaml_validates_with_the_dagster_cli(tmp_path):
    completed = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT, env={**os.environ, "DAGSTER_HOME": str(tmp_path)}, capture_output=True, text=True,
        timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "All code locations passed validation" in completed.stdout + completed.stderr


def test_every_materializable_asset_has_its_step_codes_version():
    """No asset set code_version, so the UI could not show an asset stale after its code changed."""
    from assets._catalog import CODE_VERSIONS
    from pipelines.training.job import CODE_VERSION

    graph = defs.resolve_asset_graph()
    materializable = {k.to_user_string() for k in graph.materializable_asset_keys}
    assert set(CODE_VERSIONS) == materializable  # every asset listed, nothing stale in the table
    versions = {k.to_user_string(): graph.get(k).code_version for k in graph.materializable_asset_keys}
    assert versions["reasoning_checkpoint"] == f"{CODE_VERSION}+{profile_version(os.environ.get('LLM_LINEAGE_PROFILE', 'tiny'))}" and all(versions.values())


def test_a_profile_change_is_a_code_version_change():
    """The profile's settings are the steps' defaults: another profile, or an edited one, makes assets stale."""
    assert profile_version("tiny") != profile_version("smoke")
    assert profile_version("tiny") == profile_version("tiny") and profile_version("tiny").startswith("tiny-")


def test_every_materializable_asset_has_owners_and_every_table_a_column_schema(tmp_path):
    graph = defs.resolve_asset_graph()
    assert all(graph.get(k).owners for k in graph.materializable_asset_keys)
    from assets.datasets import eval_suites, sft_dataset, training_problems
    from assets.raw import raw_problems, raw_training_data
    from pipelines.definitions import default_resources

    resources = default_resources(tmp_path, profile="smoke", tracking_uri="sqlite:///unused.db")
    result = dg.materialize([raw_problems, raw_training_data, eval_suites, training_problems, sft_dataset],
                            resources=resources)
    for asset in ("raw_problems", "raw_training_data", "eval_suites", "training_problems", "sft_dataset"):
        schema = result.asset_materializations_for_node(asset)[-1].metadata["dagster/column_schema"].value
        assert schema.columns, asset
    problems = result.asset_materializations_for_node("raw_problems")[-1].metadata["dagster/column_schema"].value
    assert {c.name: c.type for c in problems.columns}["question"] == "string"
    assert [c.name for c in problems.columns][:4] == ["problem_id", "key", "split", "question"]
