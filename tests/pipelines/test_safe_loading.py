"""The lineage's checkpoints are safetensors, and its loaders refuse pickled weights."""

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
