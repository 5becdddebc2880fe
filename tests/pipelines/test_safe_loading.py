"""The lineage's checkpoints are safetensors, its loaders refuse pickled weights, remote code is opt-in."""

import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file

from pipelines.evaluation.generation import load_for_generation

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".ckpt"}


def test_saved_checkpoints_hold_no_pickles(micro_base):
    directory, _ = micro_base
    assert (directory / "model.safetensors").is_file()
    assert not [p for p in directory.rglob("*") if p.suffix in PICKLE_SUFFIXES]


def test_a_pickled_checkpoint_is_refused(micro_base, tmp_path):
    directory = tmp_path / "pickled"
    shutil.copytree(micro_base[0], directory)
    torch.save(load_file(directory / "model.safetensors"), directory / "pytorch_model.bin")
    (directory / "model.safetensors").unlink()
    with pytest.raises(OSError, match="safetensors"):
        load_for_generation(directory)


def _base_import(model_dir, home, trust_remote_code: bool):
    import dagster as dg

    from assets.checkpoints import base_checkpoint
    from pipelines.definitions import default_resources

    instance = dg.DagsterInstance.ephemeral()
    config = {"base_model": str(model_dir), "trust_remote_code": trust_remote_code}
    result = dg.materialize([base_checkpoint], instance=instance, run_config={"ops": {"base_checkpoint": {
        "config": config}}}, resources=default_resources(home, profile="smoke", tracking_uri=f"sqlite:///{home}/m.db"))
    warnings = [r.user_message for r in instance.all_logs(result.run_id) if r.level == logging.WARNING]
    return result, [w for w in warnings if "trust_remote_code" in w]


def test_trust_remote_code_is_an_explicit_opt_in_logged_as_a_warning(micro_base, tmp_path):
    result, warnings = _base_import(micro_base[0], tmp_path / "off", trust_remote_code=False)
    assert result.success and warnings == []
    result, warnings = _base_import(micro_base[0], tmp_path / "on", trust_remote_code=True)
    assert result.success and len(warnings) == 1 and str(micro_base[0]) in warnings[0]
