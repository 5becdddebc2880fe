"""The training recipes of the lineage, all through TRL: pretraining, SFT, DPO and GRPO.

Each recipe reads a model directory, trains with periodic checkpoints in a work directory (so a killed
run resumes from its last saved step), and saves a complete directory (weights, config, tokenizer,
generation config) that ``from_pretrained`` loads. Optional LoRA (peft) is merged or kept as an adapter.
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # TRL pings the Hub otherwise; the lineage is offline.


# The lineage's own checkpoints are safetensors only (save_pretrained writes nothing else), so loading
# them refuses pickled weights outright; an imported base may ship .bin files, which transformers then
# reads with torch.load(weights_only=True), never executing pickled code.
OWN_CHECKPOINT = {"use_safetensors": True}
IMPORTED_WEIGHTS = {"weights_only": True}


@dataclass(frozen=True)
class TrainSettings:
    max_steps: int
    batch_size: int
    learning_rate: float
    max_length: int
    seed: int
    warmup_ratio: float = 0.05
    logging_steps: int = 10
    gradient_accumulation_steps: int = 1
    packing: bool = False  # pretraining only: concatenate documents into full max_length rows
    gradient_checkpointing: bool = False


@dataclass
class TrainingSummary:
    recipe: str
    steps: int
    final_loss: float
    runtime_s: float
    num_parameters: int
    examples: int
    resumed_from_step: int = 0
    processes: int = 1
    tokens: int = 0  # training tokens seen (all processes), as TRL counts them
    loss_history: list[tuple[int, float]] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        return {"final_loss": self.final_loss, "runtime_s": self.runtime_s, "steps": float(self.steps),
                "num_parameters": float(self.num_parameters), "examples": float(self.examples),
                "resumed_from_step": float(self.resumed_from_step), "processes": float(self.processes),
                "tokens": float(self.tokens),
                "tokens_per_second": self.tokens / self.runtime_s if self.runtime_s else 0.0}


@dataclass
class RunOptions:
    """How a recipe runs (not what it learns): where it checkpoints, who listens, LoRA, remote code."""

    work_dir: Path | None = None  # None: a temporary directory, no resume
    save_steps: int = 0  # 0: no periodic checkpoints
    callbacks: list = field(default_factory=list)
    lora: Any = None  # pipelines.training.job.LoraSettings
    trust_remote_code: bool = False
    assistant_only_loss: bool = False
    chat: Any = None  # pipelines.training.chat_options.ChatOptions: system prompt, template kwargs, override


def _chat(options: RunOptions):
    from pipelines.training.chat_options import ChatOptions

    return options.chat or ChatOptions()


def _dataset(columns: dict, chat):
    """Conversational rows plus TRL's per-row ``chat_template_kwargs`` column (SFT and DPO pass it to the
    template); no such column when there are no kwargs, so those rows are exactly what they were."""
    from datasets import Dataset

    if chat.template_kwargs:
        columns["chat_template_kwargs"] = [dict(chat.template_kwargs) for _ in next(iter(columns.values()))]
    return Dataset.from_dict(columns)


def sft_dataset(rows: list[dict], chat, assistant_only_loss: bool = False):
    """SFT rows as TRL reads them: prompt → completion, or whole conversations for assistant-only loss."""
    from pipelines.data.formats import assistant_messages, prompt_messages

    if assistant_only_loss:
        return _dataset({"messages": [chat.prompt(prompt_messages(r)) + assistant_messages(r["completion"])
                                      for r in rows]}, chat)
    return _dataset({"prompt": [chat.prompt(prompt_messages(r)) for r in rows],
                     "completion": [assistant_messages(r["completion"]) for r in rows]}, chat)


def dpo_dataset(rows: list[dict], chat):
    """Preference pairs as TRL reads them: explicit conversational prompt, chosen and rejected turns."""
    from pipelines.data.formats import assistant_messages, prompt_messages

    return _dataset({"prompt": [chat.prompt(prompt_messages(r)) for r in rows],
                     "chosen": [assistant_messages(r["chosen"]) for r in rows],
                     "rejected": [assistant_messages(r["rejected"]) for r in rows]}, chat)


def _common_args(settings: TrainSettings, work_dir: Path, save_steps: int) -> dict:
    import torch

    on_gpu = torch.cuda.is_available()
    return dict(
        output_dir=str(work_dir), max_steps=settings.max_steps, per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        learning_rate=settings.learning_rate, lr_scheduler_type="cosine", warmup_steps=settings.warmup_ratio,
        logging_steps=settings.logging_steps, report_to="none", seed=settings.seed, data_seed=settings.seed,
        save_strategy="steps" if save_steps else "no", save_steps=save_steps or 500, save_total_limit=2,
        use_cpu=not on_gpu, bf16=on_gpu, disable_tqdm=True, dataloader_num_workers=0,
        activation_checkpointing=settings.gradient_checkpointing,
        max_length=settings.max_length,
    )


@contextmanager
def _work_dir(options: RunOptions):
    if options.work_dir is not None:
        options.work_dir.mkdir(parents=True, exist_ok=True)
        yield options.work_dir
        return
    with tempfile.TemporaryDirectory() as scratch:
        yield Path(scratch)


def latest_checkpoint(work_dir: Path) -> Path | None:
    """The newest complete ``checkpoint-N`` (Trainer writes trainer_state.json last)."""
    complete = [p for p in work_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(complete, key=lambda p: int(p.name.split("-")[1]), default=None)


def _fit(trainer, work_dir: Path) -> int:
    from pipelines.training.callbacks import SkipFinalCheckpoint

    trainer.add_callback(SkipFinalCheckpoint())
    resume = latest_checkpoint(work_dir)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return int(resume.name.split("-")[1]) if resume else 0


def _summary(recipe: str, trainer, examples: int, started: float, resumed_from: int) -> TrainingSummary:
    history = [(int(e["step"]), float(e["loss"])) for e in trainer.state.log_history if "loss" in e]
    final = history[-1][1] if history else float("nan")
    tokens = max((int(float(e["num_tokens"])) for e in trainer.state.log_history if "num_tokens" in e), default=0)
    return TrainingSummary(recipe=recipe, steps=int(trainer.state.global_step), final_loss=final,
                           runtime_s=round(time.perf_counter() - started, 2),
                           num_parameters=sum(p.numel() for p in trainer.model.parameters()),
                           examples=examples, resumed_from_step=resumed_from, processes=trainer.args.world_size,
                           tokens=tokens, loss_history=history)


def _load_model(model_dir: Path | str, options: RunOptions):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=options.trust_remote_code,
                                                 **OWN_CHECKPOINT)
    if options.lora is None:
        return model
    from peft import LoraConfig, get_peft_model

    lora = options.lora
    return get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                            target_modules=list(lora.target_modules), task_type="CAUSAL_LM"))


def save_model_dir(model, tokenizer, output_dir: Path, lora=None) -> None:
    """A directory ``from_pretrained`` loads: merged LoRA weights unless an adapter-only dir is asked for.

    Its generation config stops on what the model was started with (its generation config's eos ids) plus
    the tokenizer's eos and the chat template's end of turn: whatever the family, never looked up by name.
    """
    from transformers import GenerationConfig

    from pipelines.training.stop_tokens import stop_token_ids

    output_dir.mkdir(parents=True, exist_ok=True)
    stop_ids = stop_token_ids(tokenizer, getattr(model, "generation_config", None))
    if lora is not None and lora.merge:
        model = model.merge_and_unload()
    model.config.use_cache = True
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    GenerationConfig(eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id,
                     do_sample=False).save_pretrained(output_dir)


def _finish(trainer, tokenizer, output_dir: Path, options: RunOptions) -> None:
    if trainer.is_world_process_zero():
        save_model_dir(trainer.model, tokenizer, output_dir, options.lora)


def import_base(model_ref: str, output_dir: Path, trust_remote_code: bool = False) -> TrainingSummary:
    """Use an existing base model (local directory or HF id) as the lineage's base checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipelines.training.stop_tokens import stop_token_ids

    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_ref, trust_remote_code=trust_remote_code, **IMPORTED_WEIGHTS)
    tokenizer = AutoTokenizer.from_pretrained(model_ref, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:  # Llama-3 ships none; batched generation and training need one
        tokenizer.pad_token = tokenizer.eos_token
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    # Its own generation config, stopping on its eos (int or list) and its chat template's end of turn too.
    model.generation_config.eos_token_id = stop_token_ids(tokenizer, model.generation_config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.save_pretrained(output_dir)
    return TrainingSummary("import", 0, float("nan"), round(time.perf_counter() - started, 2),
                           sum(p.numel() for p in model.parameters()), 0)


def pretrain_base(texts: list[str], tokenizer_dir: Path, shape, settings: TrainSettings, output_dir: Path,
                  options: RunOptions | None = None) -> TrainingSummary:
    """Next-token pretraining of a fresh tiny Qwen3 on plain corpus documents (no chat format)."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from pipelines.training.model import init_tiny_qwen3
    from pipelines.training.tokenizer import END_OF_TEXT

    options = options or RunOptions()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = init_tiny_qwen3(shape, tokenizer, settings.seed)
    # Documents end with END_OF_TEXT here, chat turns with the template's end token later: both stop it.
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(END_OF_TEXT)]
    started = time.perf_counter()
    with _work_dir(options) as work:
        args = SFTConfig(**_common_args(settings, work, options.save_steps), dataset_text_field="text",
                         eos_token=END_OF_TEXT, packing=settings.packing, packing_strategy="wrapped")
        trainer = SFTTrainer(model=model, args=args, processing_class=tokenizer, callbacks=options.callbacks,
                             train_dataset=Dataset.from_dict({"text": texts}))
        resumed = _fit(trainer, work)
        _finish(trainer, AutoTokenizer.from_pretrained(tokenizer_dir), output_dir, options)  # unmodified by TRL
    return _summary("pretrain", trainer, len(texts), started, resumed)


def sft(model_dir: Path, rows: list[dict], settings: TrainSettings, output_dir: Path, recipe: str = "sft",
        options: RunOptions | None = None) -> TrainingSummary:
    """Chat SFT on prompt → completion rows; only completion (assistant) tokens are in the loss.

    With ``assistant_only_loss`` the rows are full conversations and the chat template's
    ``{% generation %}`` markers select the trained tokens instead of the prompt/completion split.
    """
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    options = options or RunOptions()
    chat = _chat(options)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=options.trust_remote_code)
    model = _load_model(model_dir, options)
    dataset = sft_dataset(rows, chat, options.assistant_only_loss)
    loss_args = {"assistant_only_loss": True} if options.assistant_only_loss else {"completion_only_loss": True}
    chat.template_text()  # the override must still be the file the job was fingerprinted with
    started = time.perf_counter()
    with _work_dir(options) as work:
        args = SFTConfig(**_common_args(settings, work, options.save_steps), packing=False,
                         chat_template_path=chat.chat_template_file, **loss_args)  # TRL installs the override
        trainer = SFTTrainer(model=model, args=args, processing_class=tokenizer, train_dataset=dataset,
                             callbacks=options.callbacks)
        resumed = _fit(trainer, work)
        _finish(trainer, tokenizer, output_dir, options)
    return _summary(recipe, trainer, len(rows), started, resumed)


def dpo(model_dir: Path, rows: list[dict], settings: TrainSettings, beta: float, output_dir: Path,
        options: RunOptions | None = None) -> TrainingSummary:
    """DPO (+ an SFT term on the chosen answer) against a frozen copy of ``model_dir``."""
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    options = options or RunOptions()
    chat = _chat(options)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=options.trust_remote_code)
    chat.apply_template(tokenizer)
    model = _load_model(model_dir, options)
    dataset = dpo_dataset(rows, chat)
    started = time.perf_counter()
    with _work_dir(options) as work:
        args = DPOConfig(**_common_args(settings, work, options.save_steps), beta=beta, loss_type=["sigmoid", "sft"])
        trainer = DPOTrainer(model=model, args=args, processing_class=tokenizer, train_dataset=dataset,
                             callbacks=options.callbacks)
        resumed = _fit(trainer, work)
        _finish(trainer, tokenizer, output_dir, options)
    return _summary("dpo", trainer, len(rows), started, resumed)


def grpo(model_dir: Path, rows: list[dict], settings: TrainSettings, grpo_settings, output_dir: Path,
         options: RunOptions | None = None) -> TrainingSummary:
    """GRPO with verifiable rewards: the project's grader for correctness plus a <think> format reward."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from pipelines.data.formats import prompt_messages
    from pipelines.training.rewards import correctness_reward, format_reward

    options = options or RunOptions()
    chat = _chat(options)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=options.trust_remote_code)
    chat.apply_template(tokenizer)
    model = _load_model(model_dir, options)
    dataset = Dataset.from_dict({"prompt": [chat.prompt(prompt_messages(r)) for r in rows],
                                 "answer": [r["answer"] for r in rows]})
    started = time.perf_counter()
    with _work_dir(options) as work:
        common = _common_args(settings, work, options.save_steps)
        common.pop("max_length")
        args = GRPOConfig(**common, num_generations=grpo_settings.num_generations,
                          max_completion_length=grpo_settings.max_completion_length,
                          temperature=grpo_settings.temperature,
                          chat_template_kwargs=dict(chat.template_kwargs) or None)
        trainer = GRPOTrainer(model=model, args=args, processing_class=tokenizer, train_dataset=dataset,
                              reward_funcs=[correctness_reward, format_reward], callbacks=options.callbacks)
        resumed = _fit(trainer, work)
        _finish(trainer, tokenizer, output_dir, options)
    return _summary("grpo", trainer, len(rows), started, resumed)
