"""Named profiles: the default sizes of every stage, chosen with ``LLM_LINEAGE_PROFILE``.

``tiny`` is the embedded default (`make demo`, ~2 CPU cores); ``smoke`` is the same lineage shrunk to
seconds per stage for the end-to-end test. Tiny's sizes were chosen by measurement on 2 cores:
operands ≤ 10 make two-step arithmetic learnable in ~5 minutes of training in total (with operands
≤ 20 the same budget reached only ~0.3 accuracy for the reasoning variant). Any field can still be overridden per asset in the
Launchpad; a profile only sets the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from pipelines.evaluation.decoding import Decoding
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
    # Decontamination: a training problem sharing this many consecutive normalized words with an eval
    # item is removed. 13 (the GPT-3 paper's choice) still catches near-copies of GSM8K questions; 8
    # flags template boilerplate ("… gives away 2 of them. How many …") in the generator's problems.
    decontamination_ngram: int = 13
    # Blocking check on raw_problems: above this share of quarantined lines the source is broken and
    # nothing downstream should be built from it (real GSM8K: 0 of 8,792 lines).
    max_quarantine_rate: float = 0.05


@dataclass(frozen=True)
class EvalSettings:
    """Decoding per variant, as the paper compares them fairly (see pipelines/evaluation/decoding.py)."""

    max_new_tokens: int
    batch_size: int
    base_branches: int = 5  # CoT decoding: top-K first tokens
    instruct_samples: int = 4
    instruct_temperature: float = 0.2  # low-temperature sampling
    reasoning_samples: int = 4
    reasoning_temperature: float = 0.6  # thinking-mode sampling
    seed: int = 0
    grading_workers: int = 2  # math-verify processes
    base_stop_strings: tuple[str, ...] = ("\nQuestion:",)  # a base model goes on to write the next question
    chat_backend: str = "hf"  # generation engine for the sampled (chat) variants: hf | vllm
    gate_tolerance: float = 0.02  # champion gating: the largest pass@1 drop per suite still accepted

    def decoding_for(self, variant: str) -> Decoding:
        if variant == "base":
            return Decoding("cot", self.max_new_tokens, self.batch_size, self.seed, samples=self.base_branches,
                            stop_strings=self.base_stop_strings)
        if variant == "instruct":
            return Decoding("sample", self.max_new_tokens, self.batch_size, self.seed, backend=self.chat_backend,
                            samples=self.instruct_samples, temperature=self.instruct_temperature)
        return Decoding("sample", self.max_new_tokens, self.batch_size, self.seed, backend=self.chat_backend,
                        samples=self.reasoning_samples, temperature=self.reasoning_temperature)


@dataclass(frozen=True)
class SelfImprovementSettings:
    """Rounds of the reasoning branch on its own verified samples (``assets/self_improvement.py``)."""

    rounds: int  # asset pairs built per round; LLM_LINEAGE_ROUNDS overrides it when the code location loads
    prompts: int  # training prompts sampled per round (each round takes the next block of the pool)
    samples_per_prompt: int
    temperature: float
    max_new_tokens: int
    validation_prompts: int  # held-out training prompts no round samples: greedy pass@1 decides early stopping
    min_improvement: float  # a round gaining less validation pass@1 than this stops the rounds after it
    sft: TrainSettings  # each round's think-SFT on its kept samples, from the previous round's weights
    agreement: float = 0.6  # self-consistency labelling of prompts without a gold answer


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
    self_improvement: SelfImprovementSettings


def with_overrides(settings, overrides: dict):
    """``settings`` with every non-None override applied (unknown keys are ignored)."""
    names = {f.name for f in fields(settings)}
    return replace(settings, **{k: v for k, v in overrides.items() if v is not None and k in names})


TINY = Profile(
    name="tiny",
    data=DataSettings(n_problems=2000, seed=0, max_operand=10, eval_fraction=0.1, eval_suite_size=80),
    tokenizer_vocab_size=512,
    model=ModelShape(hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=512,
                     max_positions=256),
    # Cut to keep `make demo` within 10 minutes on 2 shared cores (~0.5 s per pretraining step on 2026-12-01/02
    # against ~0.31 on 2026-11-30, same code, measured A/B): pretraining 400 → 240 steps, think-SFT 200 → 130,
    # eval suites 150 → 100 items each. Loss curves: pretraining 0.28 at 400, 0.30 at 300; think-SFT 0.057 at
    # 200, 0.074 at 150. Pass@1 on in-distribution at this scale swings with the step counts more than it trends
    # (base CoT / instruct / reasoning): 0.07 / 0.32 / 0.33 at 240 / 130 steps, 0.10 / 0.07 / 0.25 at 300 / 150
    # (both 100-item suites, 2026-12-02), 0.18 / 0.09 / 0.47 at 320 / 160 (150 items, 2026-12-01).
    # The self-improvement rounds (two rounds and two more reasoning evals, rounds 0 and 1) took ~150-200 s more;
    # to keep the demo within budget instruct SFT went 150 → 90 steps (instruct pass@1 0.32 at 150), DPO 30 → 20,
    # and the eval suites 100 → 80 items each (2026-12-02).
    pretrain=TrainSettings(max_steps=240, batch_size=32, learning_rate=2e-3, max_length=128, seed=0),
    instruct_sft=TrainSettings(max_steps=90, batch_size=32, learning_rate=1e-3, max_length=128, seed=0),
    think_sft=TrainSettings(max_steps=130, batch_size=32, learning_rate=1e-3, max_length=128, seed=0),
    # DPO on synthetic pairs only erodes think-SFT accuracy at this scale (lr 5e-5: 0.87 → 0.57 on the
    # in-distribution suite; 1e-5: → 0.83), so the tiny profile keeps it gentle.
    dpo=TrainSettings(max_steps=20, batch_size=16, learning_rate=1e-5, max_length=128, seed=0),
    dpo_beta=0.1,
    grpo=TrainSettings(max_steps=20, batch_size=8, learning_rate=5e-6, max_length=128, seed=0, logging_steps=5),
    grpo_options=GrpoSettings(num_generations=4, max_completion_length=48),
    save_steps=50,
    eval=EvalSettings(max_new_tokens=64, batch_size=64),
    # Rounds: 512 prompts x 4 samples at the eval's thinking temperature, 20 steps at lr 1e-4 each (measured on the
    # demo's checkpoints, 2026-12-02: temperature 1.0 or lr 2e-4-5e-4 lowered pass@1, 0.31 -> 0.17-0.29, as did keeping
    # answers reached through wrong steps; this raised it 0.27 -> 0.30 -> 0.36, 40 steps 0.27 -> 0.33 -> 0.32). The
    # validation signal is noisy (120 prompts x 4 samples, std ~0.02-0.03), so a round stops the next only when it lost
    # (200 prompts took ~13 s per measurement).
    self_improvement=SelfImprovementSettings(
        rounds=2, prompts=512, samples_per_prompt=4, temperature=0.6, max_new_tokens=64, validation_prompts=120,
        min_improvement=0.0, sft=TrainSettings(max_steps=20, batch_size=32, learning_rate=1e-4, max_length=128, seed=0)),
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
    eval=EvalSettings(max_new_tokens=32, batch_size=32, base_branches=2, instruct_samples=2, reasoning_samples=2),
    self_improvement=SelfImprovementSettings(
        rounds=1, prompts=32, samples_per_prompt=2, temperature=0.6, max_new_tokens=32, validation_prompts=16,
        min_improvement=0.0, sft=TrainSettings(max_steps=4, batch_size=8, learning_rate=5e-4, max_length=128, seed=0,
                                               logging_steps=2)),
)

# A ~0.6B Qwen3-class model (Qwen3-0.6B's shape) for one or more GPUs: bf16 (automatic on CUDA), SDPA
# attention, packed pretraining batches, gradient checkpointing. Use `base_model` on base_checkpoint to
# start from real weights (e.g. a local copy of Qwen3-0.6B-Base) instead of pretraining from scratch.
GPU = Profile(
    name="gpu",
    data=DataSettings(n_problems=2000, seed=0, max_operand=10, eval_fraction=0.1, eval_suite_size=150),
    tokenizer_vocab_size=512,
    model=ModelShape(hidden_size=1024, num_layers=28, num_heads=16, num_kv_heads=8, intermediate_size=3072,
                     max_positions=4096, head_dim=128),
    pretrain=TrainSettings(max_steps=2000, batch_size=32, learning_rate=3e-4, max_length=1024, seed=0,
                           logging_steps=10, packing=True, gradient_checkpointing=True),
    instruct_sft=TrainSettings(max_steps=500, batch_size=32, learning_rate=2e-5, max_length=512, seed=0,
                               gradient_checkpointing=True),
    think_sft=TrainSettings(max_steps=500, batch_size=32, learning_rate=2e-5, max_length=512, seed=0,
                            gradient_checkpointing=True),
    dpo=TrainSettings(max_steps=200, batch_size=16, learning_rate=5e-7, max_length=512, seed=0,
                      gradient_checkpointing=True),
    dpo_beta=0.1,
    grpo=TrainSettings(max_steps=200, batch_size=16, learning_rate=1e-6, max_length=512, seed=0, logging_steps=5,
                       gradient_checkpointing=True),
    grpo_options=GrpoSettings(num_generations=8, max_completion_length=256),
    save_steps=100,
    eval=EvalSettings(max_new_tokens=256, batch_size=128),
    self_improvement=SelfImprovementSettings(
        rounds=2, prompts=1024, samples_per_prompt=8, temperature=0.6, max_new_tokens=256, validation_prompts=200,
        min_improvement=0.01, sft=TrainSettings(max_steps=200, batch_size=32, learning_rate=1e-5, max_length=512,
                                                seed=0, gradient_checkpointing=True)),
)

PROFILES = {profile.name: profile for profile in (TINY, SMOKE, GPU)}
