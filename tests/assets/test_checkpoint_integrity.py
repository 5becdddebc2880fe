"""Corrupted published checkpoints through real Dagster runs: a truncated base is not reused, and
eval_base refuses a base whose weights were overwritten instead of evaluating garbage."""

import os
import shutil

import dagster as dg
import pytest

from assets.checkpoints import base_checkpoint
from assets.datasets import eval_suites
from assets.evals import eval_base
from assets.raw import raw_problems
from pipelines.definitions import default_resources
from pipelines.training.model import ModelShape, init_tiny_qwen3
from pipelines.training.recipes import save_model_dir
from pipelines.training.tokenizer import train_tokenizer

pytestmark = pytest.mark.slow  # Dagster runs importing a model and evaluating it

SHAPE = ModelShape(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
                   max_positions=256)


@pytest.fixture(scope="module")
def lineage(tmp_path_factory):
    """Eval suites, and a tiny real model (tokenizer + weights) to import as base_checkpoint."""
    home = tmp_path_factory.mktemp("integrity")
    resources = default_resources(home, profile="smoke", tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([raw_problems, eval_suites], resources=resources, instance=instance).success
    model = home / "imported" / "model"
    tokenizer = train_tokenizer([f"{a} + {b} = {a + b}" for a in range(30) for b in range(30)], 300, model)
    save_model_dir(init_tiny_qwen3(SHAPE, tokenizer, seed=0), tokenizer, model)
    return home, resources, instance, model


def _import_base(lineage, name: str, raise_on_error: bool = True):
    """Materialize base_checkpoint from a copy of the tiny model with a model card naming ``name``: an
    imported base is versioned by its files' content, so each name is its own fingerprint."""
    home, resources, instance, model = lineage
    source = home / "imported" / name
    if not source.exists():
        shutil.copytree(model, source)
        (source / "README.md").write_text(f"# {name}\n")
    config = {"ops": {"base_checkpoint": {"config": {"base_model": str(source)}}}}
    return dg.materialize([base_checkpoint], resources=resources, instance=instance, run_config=config,
                          raise_on_error=raise_on_error)


def _failure(result) -> str:
    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error
    return "\n".join(e.message for e in (error, error.cause) if e is not None)


def _reused(result) -> bool:
    return result.asset_materializations_for_node("base_checkpoint")[-1].metadata["reused"].value


def test_truncated_base_is_not_reused_and_other_inputs_still_train(lineage):
    first = _import_base(lineage, "truncated")
    assert _reused(first) is False and _reused(_import_base(lineage, "truncated")) is True  # untouched: reused
    directory = lineage[1]["checkpoints"].current("base_checkpoint")
    weights = directory / "model.safetensors"
    os.truncate(weights, weights.stat().st_size - 1000)
    message = _failure(_import_base(lineage, "truncated", raise_on_error=False))
    assert "CheckpointCorrupted" in message and f"base_checkpoint version {directory.name}: model.safetensors " \
        "size mismatch" in message and f"delete {directory} and rematerialize" in message, message
    # Other inputs (a new fingerprint) train and publish as usual; the damaged version stops being current.
    assert _reused(_import_base(lineage, "changed")) is False
    assert lineage[1]["checkpoints"].current("base_checkpoint") != directory


def test_eval_base_refuses_overwritten_weights(lineage):
    _, resources, instance, _ = lineage
    _import_base(lineage, "overwritten")
    weights = resources["checkpoints"].current("base_checkpoint") / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.seek(weights.stat().st_size // 2)
        handle.write(os.urandom(8 * 1024))
    result = dg.materialize([eval_base], resources=resources, instance=instance, raise_on_error=False)
    message = _failure(result)
    assert "CheckpointCorrupted" in message and "model.safetensors sha256 mismatch" in message, message
