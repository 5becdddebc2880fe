"""A local, offline model directory for the generation benchmark: the project's tokenizer + tiny Qwen3.

Randomly initialised weights are enough for a throughput comparison: both engines run the same model
on the same prompts with the same stop conditions; they just produce nonsense tokens.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pipelines.data.datasets import build_corpus
from pipelines.data.synthetic import generate_problems
from pipelines.profiles import SMOKE, TINY
from pipelines.training.model import init_tiny_qwen3
from pipelines.training.recipes import save_model_dir
from pipelines.training.tokenizer import train_tokenizer

# GSM8K questions run longer (in this tokenizer's tokens) than the lineage's own prompts, so the
# benchmark model accepts longer positions; everything else is the profile's shape.
BENCH_MAX_POSITIONS = 1024


def build_local_model(directory: Path, quick: bool = False, seed: int = 0) -> Path:
    """Tokenizer trained on the synthetic corpus + a random tiny Qwen3 (the profile's shape), saved
    as a ``from_pretrained`` directory."""
    profile = SMOKE if quick else TINY
    problems = generate_problems(profile.data.n_problems, seed, profile.data.max_operand, profile.data.eval_fraction)
    tokenizer = train_tokenizer([doc["text"] for doc in build_corpus(problems)], profile.tokenizer_vocab_size,
                                directory / "tokenizer")
    model = init_tiny_qwen3(replace(profile.model, max_positions=BENCH_MAX_POSITIONS), tokenizer, seed)
    save_model_dir(model, tokenizer, directory / "model")
    return directory / "model"
