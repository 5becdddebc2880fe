"""Named profiles: the default sizes of every stage, chosen with ``LLM_LINEAGE_PROFILE``.

``tiny`` is the embedded default (`make demo`, ~2 CPU cores); ``smoke`` is the same lineage shrunk to
seconds per stage for the end-to-end test. Tiny's sizes were chosen by measurement on 2 cores:
operands ≤ 10 make two-step arithmetic learnable in ~5 minutes of training in total (with operands
≤ 20 the same budget reached only ~0.3 accuracy for the reasoning variant). Any field can still be overridden per asset in the
Launchpad; a profile only sets the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from pipelines.training.job import GrpoSettings
from pipelines.training.model import ModelShape
from pipelines.training.recipes import TrainSettings


@dataclass(frozen=True)
class DataSettings:
    n_problems: int
    seed: int
    max_operand: int
    eval_fraction: float
    eval_suite_size: int


@dataclass(frozen=True)
class EvalSettings:
    max_new_tokens: int
    batch_size: int


@dataclass(frozen=True)
class Profile:
    name: str
    data: DataSettings
    tokenizer_vocab_size: int
    model: ModelShape
    pretrain: TrainSettings
    instruct_sft: TrainSettings
    think_sft: TrainSettings
    dpo: TrainSettings
    dpo_beta: float
    grpo: TrainSettings
    grpo_options: GrpoSettings
    save_steps: int  # periodic checkpoints for resume
    eval: EvalSettings


def with_overrides(settings, overrides: dict):
    """``settings`` with every non-None override applied (unknown keys are ignored)."""
    names = {f.name for f in fields(settings)}
    return replace(settings, **{k: v for k, v in overrides.items() if v is not None and k in names})


TINY = Profile(
    name="tiny",
    data=DataSettings(n_problems=2000, seed=0, max_operand=10, eval_fraction=0.1, eval_suite_size=150),
    tokenizer_vocab_size=512,
    model=ModelShape(hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=512,
                     max_positions=256),
    pretrain=TrainSettings(max_steps=400, batch_size=32, learning_rate=2e-3, max_length=128, seed=0),
    instruct_sft=TrainSettings(max_steps=150, batch_size=32, learning_rate=1e-3, max_length=128, seed=0),
    think_sft=TrainSettings(max_steps=200, batch_size=32, learning_rate=1e-3, max_length=128, seed=0),
    dpo=TrainSettings(max_steps=30, batch_size=16, learning_rate=5e-5, max_length=128, seed=0),
    dpo_beta=0.1,
    grpo=TrainSettings(max_steps=20, batch_size=8, learning_rate=5e-6, max_length=128, seed=0, logging_steps=5),
    grpo_options=GrpoSettings(num_generations=4, max_completion_length=48),
    save_steps=50,
    eval=EvalSettings(max_new_tokens=64, batch_size=64),
)

SMOKE = Profile(
    name="smoke",
    data=DataSettings(n_problems=600, seed=0, max_operand=10, eval_fraction=0.1, eval_suite_size=24),
    tokenizer_vocab_size=400,
    model=ModelShape(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128,
                     max_positions=256),
    pretrain=TrainSettings(max_steps=12, batch_size=16, learning_rate=2e-3, max_length=128, seed=0,
                           logging_steps=4),
    instruct_sft=TrainSettings(max_steps=6, batch_size=16, learning_rate=1e-3, max_length=128, seed=0,
                               logging_steps=2),
    think_sft=TrainSettings(max_steps=6, batch_size=16, learning_rate=1e-3, max_length=128, seed=0,
                            logging_steps=2),
    dpo=TrainSettings(max_steps=4, batch_size=8, learning_rate=5e-5, max_length=128, seed=0, logging_steps=2),
    dpo_beta=0.1,
    grpo=TrainSettings(max_steps=2, batch_size=4, learning_rate=5e-6, max_length=128, seed=0, logging_steps=1),
    grpo_options=GrpoSettings(num_generations=4, max_completion_length=16),
    save_steps=4,
    eval=EvalSettings(max_new_tokens=32, batch_size=32),
)

PROFILES = {profile.name: profile for profile in (TINY, SMOKE)}
