"""A tokenizer and a micro model trained once per test session, for the training/generation tests."""

import pytest

from pipelines.data.datasets import build_corpus
from pipelines.data.synthetic import generate_problems
from pipelines.training.model import ModelShape
from pipelines.training.recipes import TrainSettings, pretrain_base
from pipelines.training.tokenizer import train_tokenizer

MICRO_SHAPE = ModelShape(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
                         max_positions=256)


def micro_settings(steps: int, batch_size: int = 8) -> TrainSettings:
    return TrainSettings(max_steps=steps, batch_size=batch_size, learning_rate=3e-3, max_length=128, seed=0,
                         logging_steps=1)


@pytest.fixture(scope="session")
def micro_problems():
    return generate_problems(120, seed=0, max_operand=20, eval_fraction=0.2)


@pytest.fixture(scope="session")
def micro_tokenizer_dir(tmp_path_factory, micro_problems):
    directory = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer([d["text"] for d in build_corpus(micro_problems)], 320, directory)
    return directory


@pytest.fixture(scope="session")
def micro_base(tmp_path_factory, micro_problems, micro_tokenizer_dir):
    directory = tmp_path_factory.mktemp("base")
    summary = pretrain_base([d["text"] for d in build_corpus(micro_problems)], micro_tokenizer_dir,
                            MICRO_SHAPE, micro_settings(4), directory)
    return directory, summary
