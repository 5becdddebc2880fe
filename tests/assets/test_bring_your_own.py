"""Importing your own base model through the ``base_checkpoint`` asset (issue #16): evaluation of a base
with an int eos, a content version, a clear error for a missing directory, ``trust_remote_code``
recorded for every later load, and LoRA adapter-only checkpoints refused before anything trains.
The Dagster runs that import a base are marked slow, like the other base-import runs."""

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest

from assets.checkpoints import base_checkpoint, instruct_checkpoint, reasoning_checkpoint, think_sft_checkpoint
from assets.datasets import eval_suites
from assets.evals import eval_base
from assets.raw import raw_problems
from pipelines.definitions import default_resources
from pipelines.evaluation.decoding import Decoding, generate_samples
from pipelines.evaluation.generation import load_for_generation
from pipelines.training.base_model import resolve_base_model
from tests.fixtures.hf_models import save_llama3_instruct, save_qwen3_base, save_remote_code_base


@pytest.fixture
def resources(tmp_path):
    home = tmp_path / "lineage"
    return default_resources(home, profile="smoke", tracking_uri=f"sqlite:///{home}/mlflow.db")


def _import(resources, base_model, trust_remote_code=False, instance=None):
    config = {"base_model": str(base_model), "trust_remote_code": trust_remote_code}
    result = dg.materialize([base_checkpoint], resources=resources, instance=instance,
                            run_config={"ops": {"base_checkpoint": {"config": config}}})
    return {k: v.value for k, v in result.asset_materializations_for_node("base_checkpoint")[-1].metadata.items()}


@pytest.mark.slow  # Dagster runs importing a base (and evaluating it)
def test_eval_base_decodes_an_imported_qwen3_base(resources, tmp_path):
    """Qwen3-Base ships ``eos_token_id`` as an int: eval_base crashed ('int' object is not iterable)."""
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([raw_problems, eval_suites], resources=resources, instance=instance).success
    _import(resources, save_qwen3_base(tmp_path / "Qwen3-Base"), instance=instance)
    config = {"max_new_tokens": 4}
    assert dg.materialize([eval_base], resources=resources, instance=instance,
                          run_config={"ops": {"eval_base": {"config": config}}}).success
    rows = resources["duckdb"].query("SELECT output_tokens, selected FROM eval_generations WHERE variant = 'base'")
    assert rows and all(0 < row["output_tokens"] <= 4 for row in rows)
    assert sum(row["selected"] for row in rows) == resources["duckdb"].count("eval_suites")  # one path per item


@pytest.mark.slow  # Dagster runs importing a base (and evaluating it)
def test_an_imported_base_is_versioned_by_its_content_not_its_path(resources, tmp_path):
    source = save_llama3_instruct(tmp_path / "llama3")
    first = _import(resources, source)
    assert first["reused"] is False
    assert _import(resources, source)["reused"] is True

    save_llama3_instruct(source, seed=1)  # new weights written in place, same path
    changed = _import(resources, source)
    assert changed["reused"] is False and changed["fingerprint"] != first["fingerprint"]

    moved = shutil.copytree(source, tmp_path / "elsewhere" / "llama3")  # same files, another path
    again = _import(resources, moved)
    assert again["reused"] is True and again["fingerprint"] == changed["fingerprint"]


def test_a_missing_base_directory_is_named_in_the_error(resources, tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(FileNotFoundError, match=f"no such directory: {missing}"):
        dg.materialize([base_checkpoint], resources=resources,
                       run_config={"ops": {"base_checkpoint": {"config": {"base_model": str(missing)}}}})


def test_a_hub_id_is_its_cached_snapshot_and_an_uncached_one_is_named(tmp_path):
    """The lineage runs offline: a Hub id resolves to the snapshot in the local HF cache, whose files
    (not the id) version it; one that is not cached says so instead of "Repo id must be in the form"."""
    cache = tmp_path / "hub"
    snapshot = save_qwen3_base(cache / "models--acme--tiny-qwen3" / "snapshots" / "0123abcd")
    (cache / "models--acme--tiny-qwen3" / "refs").mkdir()
    (cache / "models--acme--tiny-qwen3" / "refs" / "main").write_text("0123abcd")
    assert resolve_base_model("acme/tiny-qwen3", cache_dir=cache) == snapshot
    with pytest.raises(FileNotFoundError, match="acme/absent.*nor a model in the local Hugging Face cache"):
        resolve_base_model("acme/absent", cache_dir=cache)


@pytest.mark.slow  # Dagster runs importing a base (and evaluating it)
def test_trust_remote_code_is_recorded_and_evaluation_loads_with_it(resources, tmp_path):
    """The opt-in reached the import only: evaluating the imported checkpoint then refused its code."""
    source = save_remote_code_base(tmp_path / "remote")
    _import(resources, source, trust_remote_code=True)
    published = resources["checkpoints"].current("base_checkpoint")
    assert json.loads((published / "lineage.json").read_text())["trust_remote_code"] is True
    model, _ = load_for_generation(published)
    assert type(model).__name__ == "TinyRemoteForCausalLM"
    rows = generate_samples("base", published, [{"suite": "s", "problem_id": "p", "question": "What is 2 + 5?",
                                                 "answer": "7"}], Decoding("greedy", 4, 1, 0), model_version="v")
    assert len(rows) == 1 and 0 < rows[0]["output_tokens"] <= 4


@pytest.mark.slow  # Dagster runs importing a base (and evaluating it)
def test_a_model_without_the_opt_in_never_runs_its_code(resources, tmp_path):
    source = save_remote_code_base(tmp_path / "remote")
    with pytest.raises(ValueError, match="trust_remote_code"):
        dg.materialize([base_checkpoint], resources=resources,
                       run_config={"ops": {"base_checkpoint": {"config": {"base_model": str(source)}}}})


@pytest.mark.parametrize(("asset", "config"), [
    (think_sft_checkpoint, {"lora": {"enabled": True, "merge": False}}),
    (instruct_checkpoint, {"lora": {"enabled": True, "merge": False}}),
    (reasoning_checkpoint, {"lora": {"enabled": True, "merge": False}}),
])
def test_an_adapter_only_lora_checkpoint_is_refused_before_training(resources, asset, config):
    """merge: false published an adapter the next stage loaded frozen ("element 0 of tensors does not
    require grad"); it is refused with the reason before any data is read or anything trains."""
    name = asset.key.path[-1]
    with pytest.raises(Exception, match="lora.merge: false is not supported"):
        dg.materialize([asset], resources=resources, run_config={"ops": {name: {"config": config}}})
    assert not resources["checkpoints"].has_current(name)
    assert not (Path(resources["launcher"].work_root) / name).exists()  # no training data was even written
