"""[checkpoints] Tokenizer, base, and the two post-training branches (instruct; think-SFT → reasoning)."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from assets._training import (ChatTemplateConfig, LoraOptions, TrainOverrides, build_checkpoint,
                              combined_fingerprint, input_version, settings_params, train_stages)
from assets._automation import UPSTREAM_DATA_CHANGED
from assets._pools import ACCELERATOR
from assets._lineage import recorded
from assets.datasets import preference_dataset, raw_corpus, sft_dataset, think_dataset
from pipelines.data.datasets import direct_answer_pairs
from pipelines.profiles import with_overrides
from pipelines.training.base_model import model_content_version, resolve_base_model
from pipelines.training.checkpoint_record import TRUST_REMOTE_CODE
from pipelines.training.job import CODE_VERSION, TrainJob, write_rows
from pipelines.training.recipes import import_base
from pipelines.training.tokenizer import train_tokenizer
from resources import CheckpointStore, DuckDBStore, LineageProfile, MLflowTracking, TrainingLauncher


class TokenizerConfig(dg.Config):
    vocab_size: int | None = None


@dg.asset(group_name="checkpoints", deps=[raw_corpus], kinds={"huggingface"},
          automation_condition=UPSTREAM_DATA_CHANGED)
def tokenizer(context: dg.AssetExecutionContext, config: TokenizerConfig, duckdb: DuckDBStore,
              checkpoints: CheckpointStore, mlflow: MLflowTracking, profile: LineageProfile) -> dg.MaterializeResult:
    """Byte-level BPE (digits split) trained on the pretraining corpus, with a ChatML template."""
    vocab_size = config.vocab_size or profile.settings().tokenizer_vocab_size
    rows = duckdb.query("SELECT text FROM raw_corpus ORDER BY problem_id")
    fingerprint = combined_fingerprint([*(row["text"] for row in rows), str(vocab_size), CODE_VERSION])

    def build(staging, run) -> list:
        train_tokenizer([row["text"] for row in rows], vocab_size, staging)
        return []  # nothing step-wise to report; the params say what was trained

    return recorded(build_checkpoint(
        context, "tokenizer", fingerprint, {"vocab_size": vocab_size, "documents": len(rows)}, build, checkpoints,
        mlflow), config)


class BaseConfig(TrainOverrides):
    base_model: str | None = Field(default=None, description="Use an existing base model (local directory "
                                   "or HF id) instead of pretraining the tiny one.")
    trust_remote_code: bool = Field(default=False, description="Run model code shipped with base_model. "
                                    "Off unless you trust its source.")


@dg.asset(group_name="checkpoints", deps=[tokenizer, raw_corpus], kinds={"pytorch", "mlflow"},
          **ACCELERATOR, automation_condition=UPSTREAM_DATA_CHANGED)
def base_checkpoint(context: dg.AssetExecutionContext, config: BaseConfig, duckdb: DuckDBStore,
                    checkpoints: CheckpointStore, mlflow: MLflowTracking, launcher: TrainingLauncher,
                    profile: LineageProfile) -> dg.MaterializeResult:
    """A next-token predictor: the tiny Qwen3 pretrained on the corpus, or an imported base model."""
    if config.base_model:
        return recorded(_import_base(context, config, checkpoints, mlflow), config)
    settings = profile.settings()
    train_settings = with_overrides(settings.pretrain, config.model_dump())
    corpus = write_rows(duckdb.query("SELECT text FROM raw_corpus ORDER BY problem_id"),
                        Path(launcher.work_root) / "base_checkpoint" / "corpus.jsonl")
    job = TrainJob(recipe="pretrain", data_file=str(corpus), settings=train_settings,
                   tokenizer_dir=str(checkpoints.current("tokenizer")), model_shape=settings.model,
                   save_steps=settings.save_steps, metric_prefix="pretrain/",
                   input_versions={"tokenizer": input_version(checkpoints, "tokenizer")})
    return recorded(train_stages(
        context, "base_checkpoint", None, [job], checkpoints, mlflow, launcher,
        settings_params(pretrain=train_settings, model=settings.model)), config)


def _import_base(context: dg.AssetExecutionContext, config: BaseConfig, checkpoints: CheckpointStore,
                 mlflow: MLflowTracking) -> dg.MaterializeResult:
    """The base model's files are its version (weights changed in place are a new version, the same files
    under another path are not); ``trust_remote_code`` is recorded with it for every later load."""
    source = resolve_base_model(config.base_model)
    content = model_content_version(source)
    if config.trust_remote_code:
        context.log.warning(f"trust_remote_code=True (explicit opt-in): Python code shipped with {source} "
                            "will run in this process, and in every stage and evaluation that loads its lineage")
    params = {"base_model": config.base_model, "source_dir": str(source), "content_sha256": content,
              TRUST_REMOTE_CODE: config.trust_remote_code}
    fingerprint = combined_fingerprint([content, f"{TRUST_REMOTE_CODE}={config.trust_remote_code}", CODE_VERSION])
    return build_checkpoint(
        context, "base_checkpoint", fingerprint, params,
        lambda staging, run: [import_base(str(source), staging, config.trust_remote_code)],
        checkpoints, mlflow, lineage={TRUST_REMOTE_CODE: config.trust_remote_code})


class InstructConfig(dg.Config):
    sft: TrainOverrides = TrainOverrides()
    assistant_only_loss: bool = Field(default=False, description="Mask by the chat template's generation "
                                      "markers instead of the prompt/completion split.")
    dpo_enabled: bool = Field(default=False, description="Add a DPO stage on direct-answer preference pairs.")
    dpo: TrainOverrides = TrainOverrides()
    dpo_beta: float | None = None
    lora: LoraOptions = LoraOptions()
    chat: ChatTemplateConfig = ChatTemplateConfig()


@dg.asset(group_name="checkpoints", deps=[base_checkpoint, sft_dataset, preference_dataset],
          kinds={"pytorch", "mlflow"}, **ACCELERATOR,
          automation_condition=UPSTREAM_DATA_CHANGED)
def instruct_checkpoint(context: dg.AssetExecutionContext, config: InstructConfig, duckdb: DuckDBStore,
                        checkpoints: CheckpointStore, mlflow: MLflowTracking, launcher: TrainingLauncher,
                        profile: LineageProfile) -> dg.MaterializeResult:
    """The base tuned with TRL SFT to answer directly (+ optional DPO): no visible reasoning."""
    settings = profile.settings()
    work = Path(launcher.work_root) / "instruct_checkpoint"
    sft_settings = with_overrides(settings.instruct_sft, config.sft.model_dump())
    base = {"base_checkpoint": input_version(checkpoints, "base_checkpoint")}
    chat = config.chat.options()
    stages = [TrainJob(recipe="sft", data_file=str(write_rows(duckdb.rows("sft_dataset"), work / "sft.jsonl")),
                       settings=sft_settings, save_steps=settings.save_steps, lora=config.lora.settings(),
                       assistant_only_loss=config.assistant_only_loss, metric_prefix="sft/", input_versions=base,
                       chat=chat)]
    params = settings_params(sft=sft_settings)
    if config.dpo_enabled:
        dpo_settings = with_overrides(settings.dpo, config.dpo.model_dump())
        pairs = direct_answer_pairs(duckdb.rows("preference_dataset"))
        stages.append(TrainJob(recipe="dpo", data_file=str(write_rows(pairs, work / "dpo.jsonl")),
                               settings=dpo_settings, beta=config.dpo_beta or settings.dpo_beta,
                               save_steps=settings.save_steps, metric_prefix="dpo/", input_versions=base,
                               chat=chat))
        params |= settings_params(dpo=dpo_settings)
    return recorded(train_stages(
        context, "instruct_checkpoint", checkpoints.current("base_checkpoint"), stages, checkpoints, mlflow,
        launcher, params), config)


class ThinkSftConfig(TrainOverrides):
    assistant_only_loss: bool = False
    lora: LoraOptions = LoraOptions()
    chat: ChatTemplateConfig = ChatTemplateConfig()


@dg.asset(group_name="checkpoints", deps=[base_checkpoint, think_dataset], kinds={"pytorch", "mlflow"},
          **ACCELERATOR, automation_condition=UPSTREAM_DATA_CHANGED)
def think_sft_checkpoint(context: dg.AssetExecutionContext, config: ThinkSftConfig, duckdb: DuckDBStore,
                         checkpoints: CheckpointStore, mlflow: MLflowTracking, launcher: TrainingLauncher,
                         profile: LineageProfile) -> dg.MaterializeResult:
    """The base tuned on <think>…</think> traces: the reasoning branch's first stage."""
    settings = profile.settings()
    sft_settings = with_overrides(settings.think_sft, config.model_dump())
    data = write_rows(duckdb.rows("think_dataset"), Path(launcher.work_root) / "think_sft_checkpoint" / "think.jsonl")
    job = TrainJob(recipe="sft", data_file=str(data), settings=sft_settings, save_steps=settings.save_steps,
                   lora=config.lora.settings(), assistant_only_loss=config.assistant_only_loss,
                   metric_prefix="think_sft/", chat=config.chat.options(),
                   input_versions={"base_checkpoint": input_version(checkpoints, "base_checkpoint")})
    return recorded(train_stages(
        context, "think_sft_checkpoint", checkpoints.current("base_checkpoint"), [job], checkpoints, mlflow,
        launcher, settings_params(think_sft=sft_settings)), config)


class ReasoningConfig(dg.Config):
    """Preference and RL stages after think-SFT; each a switch. Unset numbers take the profile's."""

    dpo_enabled: bool = True
    dpo: TrainOverrides = TrainOverrides()
    dpo_beta: float | None = None
    grpo_enabled: bool = Field(default=False, description="GRPO with verifiable rewards (correctness via the "
                               "project's grader + <think> format) after DPO.")
    grpo: TrainOverrides = TrainOverrides()
    grpo_num_generations: int | None = None
    lora: LoraOptions = LoraOptions()
    chat: ChatTemplateConfig = ChatTemplateConfig()


@dg.asset(group_name="checkpoints", deps=[think_sft_checkpoint, preference_dataset, think_dataset],
          kinds={"pytorch", "mlflow"}, **ACCELERATOR,
          automation_condition=UPSTREAM_DATA_CHANGED)
def reasoning_checkpoint(context: dg.AssetExecutionContext, config: ReasoningConfig, duckdb: DuckDBStore,
                         checkpoints: CheckpointStore, mlflow: MLflowTracking, launcher: TrainingLauncher,
                         profile: LineageProfile) -> dg.MaterializeResult:
    """think-SFT → DPO → optional GRPO; each stage's output is a checkpoint directory under ``stages/``."""
    settings = profile.settings()
    work = Path(launcher.work_root) / "reasoning_checkpoint"
    parent = {"think_sft_checkpoint": input_version(checkpoints, "think_sft_checkpoint")}
    stages, params, chat = [], {}, config.chat.options()
    if config.dpo_enabled:
        dpo_settings = with_overrides(settings.dpo, config.dpo.model_dump())
        data = write_rows(duckdb.rows("preference_dataset"), work / "dpo.jsonl")
        stages.append(TrainJob(recipe="dpo", data_file=str(data), settings=dpo_settings,
                               beta=config.dpo_beta or settings.dpo_beta, save_steps=settings.save_steps,
                               lora=config.lora.settings(), metric_prefix="dpo/", input_versions=parent,
                               chat=chat))
        params |= settings_params(dpo=dpo_settings)
    if config.grpo_enabled:
        grpo_settings = with_overrides(settings.grpo, config.grpo.model_dump())
        options = with_overrides(settings.grpo_options, {"num_generations": config.grpo_num_generations})
        data = write_rows(duckdb.query("SELECT prompt, messages, answer FROM think_dataset WHERE answer IS NOT NULL"),
                          work / "grpo.jsonl")  # GRPO's reward verifies against a gold answer
        stages.append(TrainJob(recipe="grpo", data_file=str(data), settings=grpo_settings, grpo=options,
                               save_steps=settings.save_steps, lora=config.lora.settings(), metric_prefix="grpo/",
                               input_versions=parent, chat=chat))
        params |= settings_params(grpo=grpo_settings, grpo_options=options)
    if not stages:
        raise ValueError("reasoning_checkpoint needs at least one stage: enable dpo_enabled or grpo_enabled")
    return recorded(train_stages(
        context, "reasoning_checkpoint", checkpoints.current("think_sft_checkpoint"), stages, checkpoints, mlflow,
        launcher, params), config)
