"""[checkpoints] Tokenizer and the base / instruct / reasoning models, each a loadable directory."""

import dagster as dg

from assets._training import TrainOverrides, settings_params, train_checkpoint
from assets.datasets import preference_dataset, sft_dataset, think_dataset
from assets.raw import raw_corpus
from pipelines.profiles import with_overrides
from pipelines.training.recipes import pretrain_base, sft, think_sft_then_dpo
from pipelines.training.tokenizer import train_tokenizer
from resources import CheckpointStore, DuckDBStore, LineageProfile, MLflowTracking

TRAINING_POOL = "gpu"


class TokenizerConfig(dg.Config):
    vocab_size: int | None = None


@dg.asset(group_name="checkpoints", deps=[raw_corpus], kinds={"huggingface"})
def tokenizer(context: dg.AssetExecutionContext, config: TokenizerConfig, duckdb: DuckDBStore,
              checkpoints: CheckpointStore, mlflow: MLflowTracking, profile: LineageProfile) -> dg.MaterializeResult:
    """Byte-level BPE (digits split) trained on the pretraining corpus, with a ChatML template."""
    vocab_size = config.vocab_size or profile.settings().tokenizer_vocab_size
    texts = [row["text"] for row in duckdb.query("SELECT text FROM raw_corpus")]

    def train(staging) -> list:
        train_tokenizer(texts, vocab_size, staging)
        return []  # nothing step-wise to report; the params say what was trained

    return train_checkpoint(context, "tokenizer", {"vocab_size": vocab_size, "documents": len(texts)},
                            train, checkpoints, mlflow)


@dg.asset(group_name="checkpoints", deps=[tokenizer, raw_corpus], kinds={"pytorch", "mlflow"}, pool=TRAINING_POOL)
def base_checkpoint(context: dg.AssetExecutionContext, config: TrainOverrides, duckdb: DuckDBStore,
                    checkpoints: CheckpointStore, mlflow: MLflowTracking, profile: LineageProfile) -> dg.MaterializeResult:
    """A tiny Qwen3 pretrained from scratch on the corpus: a next-token predictor, no chat format."""
    settings = profile.settings()
    train_settings = with_overrides(settings.pretrain, config.model_dump())
    texts = [row["text"] for row in duckdb.query("SELECT text FROM raw_corpus")]
    tokenizer_dir = checkpoints.current("tokenizer")
    return train_checkpoint(
        context, "base_checkpoint", settings_params(pretrain=train_settings, model=settings.model),
        lambda staging: [pretrain_base(texts, tokenizer_dir, settings.model, train_settings, staging)],
        checkpoints, mlflow)


@dg.asset(group_name="checkpoints", deps=[base_checkpoint, sft_dataset], kinds={"pytorch", "mlflow"},
          pool=TRAINING_POOL)
def instruct_checkpoint(context: dg.AssetExecutionContext, config: TrainOverrides, duckdb: DuckDBStore,
                        checkpoints: CheckpointStore, mlflow: MLflowTracking,
                        profile: LineageProfile) -> dg.MaterializeResult:
    """The base tuned with TRL SFT to answer directly (completion-only loss)."""
    train_settings = with_overrides(profile.settings().instruct_sft, config.model_dump())
    rows = duckdb.rows("sft_dataset")
    base_dir = checkpoints.current("base_checkpoint")
    return train_checkpoint(
        context, "instruct_checkpoint", {**settings_params(sft=train_settings), "base": str(base_dir)},
        lambda staging: [sft(base_dir, rows, train_settings, staging)], checkpoints, mlflow)


class ReasoningConfig(dg.Config):
    """Overrides for the two reasoning stages; unset fields take the active profile's values."""

    think_sft: TrainOverrides = TrainOverrides()
    dpo: TrainOverrides = TrainOverrides()
    dpo_beta: float | None = None


@dg.asset(group_name="checkpoints", deps=[base_checkpoint, think_dataset, preference_dataset],
          kinds={"pytorch", "mlflow"}, pool=TRAINING_POOL)
def reasoning_checkpoint(context: dg.AssetExecutionContext, config: ReasoningConfig, duckdb: DuckDBStore,
                         checkpoints: CheckpointStore, mlflow: MLflowTracking,
                         profile: LineageProfile) -> dg.MaterializeResult:
    """The base tuned on <think> traces (TRL SFT), then preferences (TRL DPO)."""
    settings = profile.settings()
    sft_settings = with_overrides(settings.think_sft, config.think_sft.model_dump())
    dpo_settings = with_overrides(settings.dpo, config.dpo.model_dump())
    beta = config.dpo_beta if config.dpo_beta is not None else settings.dpo_beta
    think_rows, preference_rows = duckdb.rows("think_dataset"), duckdb.rows("preference_dataset")
    base_dir = checkpoints.current("base_checkpoint")
    params = {**settings_params(think_sft=sft_settings, dpo=dpo_settings), "dpo.beta": beta, "base": str(base_dir)}
    return train_checkpoint(
        context, "reasoning_checkpoint", params,
        lambda staging: think_sft_then_dpo(base_dir, think_rows, preference_rows, sft_settings, dpo_settings,
                                           beta, staging),
        checkpoints, mlflow)
