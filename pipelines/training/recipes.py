"""The three training recipes of the lineage: base pretraining, SFT and DPO, all through TRL.

Each recipe reads a model directory, trains, and saves a complete directory (weights, config,
tokenizer, generation config) that ``from_pretrained`` loads; the caller decides where it is published.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # TRL pings the Hub otherwise; the lineage is offline.


@dataclass(frozen=True)
class TrainSettings:
    max_steps: int
    batch_size: int
    learning_rate: float
    max_length: int
    seed: int
    warmup_ratio: float = 0.05
    logging_steps: int = 10


@dataclass
class TrainingSummary:
    recipe: str
    steps: int
    final_loss: float
    runtime_s: float
    num_parameters: int
    examples: int
    loss_history: list[tuple[int, float]] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        return {"final_loss": self.final_loss, "runtime_s": self.runtime_s, "steps": float(self.steps),
                "num_parameters": float(self.num_parameters), "examples": float(self.examples)}


def _common_args(settings: TrainSettings, output_dir: str) -> dict:
    import torch

    on_gpu = torch.cuda.is_available()
    return dict(
        output_dir=output_dir, max_steps=settings.max_steps, per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate, lr_scheduler_type="cosine", warmup_steps=settings.warmup_ratio,
        logging_steps=settings.logging_steps, save_strategy="no", report_to="none", seed=settings.seed,
        data_seed=settings.seed, use_cpu=not on_gpu, bf16=on_gpu,
        disable_tqdm=True, dataloader_num_workers=0, max_length=settings.max_length,
    )


def _summary(recipe: str, trainer, examples: int, started: float) -> TrainingSummary:
    history = [(int(e["step"]), float(e["loss"])) for e in trainer.state.log_history if "loss" in e]
    final = history[-1][1] if history else float("nan")
    return TrainingSummary(recipe=recipe, steps=int(trainer.state.global_step), final_loss=final,
                           runtime_s=round(time.perf_counter() - started, 2),
                           num_parameters=sum(p.numel() for p in trainer.model.parameters()),
                           examples=examples, loss_history=history)


def _save(trainer, tokenizer, output_dir: Path) -> None:
    from transformers import GenerationConfig

    from pipelines.training.tokenizer import END_OF_TEXT, IM_END

    output_dir.mkdir(parents=True, exist_ok=True)
    trainer.model.config.use_cache = True
    trainer.save_model(str(output_dir))
    tokenizer.save_pretrained(output_dir)
    # Named explicitly: TRL may rebind ``tokenizer.eos_token`` (e.g. to <|endoftext|> for pretraining).
    stop_ids = [tokenizer.convert_tokens_to_ids(token) for token in (IM_END, END_OF_TEXT)]
    GenerationConfig(eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id,
                     do_sample=False).save_pretrained(output_dir)


def pretrain_base(texts: list[str], tokenizer_dir: Path, shape, settings: TrainSettings,
                  output_dir: Path) -> TrainingSummary:
    """Next-token pretraining of a fresh tiny Qwen3 on plain corpus documents (no chat format)."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from pipelines.training.model import init_tiny_qwen3
    from pipelines.training.tokenizer import END_OF_TEXT

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = init_tiny_qwen3(shape, tokenizer, settings.seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        args = SFTConfig(**_common_args(settings, scratch), dataset_text_field="text", eos_token=END_OF_TEXT,
                         packing=False)
        trainer = SFTTrainer(model=model, args=args, processing_class=tokenizer,
                             train_dataset=Dataset.from_dict({"text": texts}))
        trainer.train()
        _save(trainer, AutoTokenizer.from_pretrained(tokenizer_dir), output_dir)  # unmodified by TRL
    return _summary("pretrain", trainer, len(texts), started)


def sft(model_dir: Path, rows: list[dict], settings: TrainSettings, output_dir: Path,
        recipe: str = "sft") -> TrainingSummary:
    """Chat SFT on prompt → completion rows; only completion tokens are in the loss."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from pipelines.data.formats import assistant_messages, user_messages

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    dataset = Dataset.from_dict({
        "prompt": [user_messages(r["prompt"]) for r in rows],
        "completion": [assistant_messages(r["completion"]) for r in rows],
    })
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        args = SFTConfig(**_common_args(settings, scratch), completion_only_loss=True, packing=False)
        trainer = SFTTrainer(model=model, args=args, processing_class=tokenizer, train_dataset=dataset)
        trainer.train()
        _save(trainer, tokenizer, output_dir)
    return _summary(recipe, trainer, len(rows), started)


def dpo(model_dir: Path, rows: list[dict], settings: TrainSettings, beta: float,
        output_dir: Path) -> TrainingSummary:
    """DPO against a frozen copy of ``model_dir`` (TRL rebuilds the reference from the saved path)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from pipelines.data.formats import assistant_messages, user_messages

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    dataset = Dataset.from_dict({
        "prompt": [user_messages(r["prompt"]) for r in rows],
        "chosen": [assistant_messages(r["chosen"]) for r in rows],
        "rejected": [assistant_messages(r["rejected"]) for r in rows],
    })
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        args = DPOConfig(**_common_args(settings, scratch), beta=beta, loss_type=["sigmoid", "sft"])
        trainer = DPOTrainer(model=model, args=args, processing_class=tokenizer, train_dataset=dataset)
        trainer.train()
        _save(trainer, tokenizer, output_dir)
    return _summary("dpo", trainer, len(rows), started)


def summary_dict(summary: TrainingSummary) -> dict:
    return asdict(summary)


def think_sft_then_dpo(base_dir: Path, think_rows: list[dict], preference_rows: list[dict],
                       sft_settings: TrainSettings, dpo_settings: TrainSettings, beta: float,
                       output_dir: Path) -> list[TrainingSummary]:
    """The reasoning branch: SFT on <think> traces, then DPO; the SFT stage is kept under ``stages/``."""
    sft_dir = output_dir / "stages" / "think_sft"
    think = sft(base_dir, think_rows, sft_settings, sft_dir, recipe="think_sft")
    preference = dpo(sft_dir, preference_rows, dpo_settings, beta, output_dir)
    return [think, preference]
