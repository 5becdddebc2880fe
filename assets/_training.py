"""The one way a checkpoint asset is produced: fingerprint, reuse or train (Pipes), publish, report.

A checkpoint's version is the fingerprint of everything that determines it (its input checkpoints'
versions, its training data, config and code version). Re-materializing with an unchanged
fingerprint reuses the published checkpoint instead of retraining, and says so in the log.
"""

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, model_validator

from assets._metadata import metadata_of_build, mlflow_metadata
from pipelines.paths import confine
from pipelines.training.chat_options import ChatOptions
from pipelines.training.checkpoint_record import (CHAT_OPTIONS, EVALUATION, LINEAGE_FILE, TRUST_REMOTE_CODE,
                                                  read_record, trusts_remote_code)
from pipelines.training.job import LoraSettings, TrainJob
from pipelines.training.plots import loss_curve_png, png_markdown, start_loading_in_background
from pipelines.training.recipes import TrainingSummary
from resources import CheckpointStore, MLflowTracking, TrainingLauncher


class TrainOverrides(dg.Config):
    """Launchpad overrides for a training stage; unset fields take the active profile's values. Sizes and
    the learning rate must be positive: a negative ``max_steps`` would silently mean "train by epochs"."""

    max_steps: int | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, gt=0)
    learning_rate: float | None = Field(default=None, gt=0)
    max_length: int | None = Field(default=None, gt=0)
    seed: int | None = None
    gradient_accumulation_steps: int | None = Field(default=None, gt=0)
    packing: bool | None = None
    gradient_checkpointing: bool | None = None


class LoraOptions(dg.Config):
    """LoRA via peft, published as merged full weights: every checkpoint of the lineage is trained on by a
    later stage or evaluated, and both load full weights. ``merge: false`` (an adapter-only directory) is
    refused before anything trains: the next stage loaded it frozen ("element 0 of tensors does not require
    grad"), and loading adapters under transformers 5 wants peft >= 0.22, which the package index lacks."""

    enabled: bool = False
    r: int = 8
    alpha: int = 16
    merge: bool = True

    @model_validator(mode="after")
    def _merged_only(self):
        if self.enabled and not self.merge:
            raise ValueError("lora.merge: false is not supported in the lineage: an adapter-only checkpoint "
                             "cannot be trained by the next stage or evaluated here (that needs peft >= 0.22); "
                             "set lora.merge: true to publish merged weights")
        return self

    def settings(self) -> LoraSettings | None:
        return LoraSettings(r=self.r, alpha=self.alpha, merge=self.merge) if self.enabled else None


class ChatTemplateConfig(dg.Config):
    """Chat template options for every stage of a training asset, through TRL's own hooks (per-row
    ``chat_template_kwargs``, ``SFTConfig.chat_template_path``). They enter the fingerprint (the template
    by its content) and the checkpoint's lineage.json, and evaluation asks the checkpoint the same way."""

    system_prompt: str | None = Field(default=None, description="Prepended as a system message to every "
                                      "prompt, unless a row's conversation starts with its own.")
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict, description="Passed to the chat "
                                                 "template, e.g. {enable_thinking: false} for Qwen3.")
    chat_template: str | None = Field(default=None, description="A .jinja file replacing the model's chat "
                                      "template; saved with the checkpoint (path inside the data roots).")

    def options(self) -> ChatOptions | None:
        """None when nothing is set: such jobs keep the fingerprint they had before these options existed."""
        path = confine(self.chat_template, "chat.chat_template") if self.chat_template else None
        options = ChatOptions.with_template_file(path, system_prompt=self.system_prompt or None,
                                                 template_kwargs=dict(self.chat_template_kwargs))
        return None if options.is_default else options


def combined_fingerprint(parts: list[str]) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def read_lineage(checkpoints: CheckpointStore, name: str) -> dict:
    """The published checkpoint's lineage record ({} if it has none)."""
    return read_record(checkpoints.current(name))


def input_version(checkpoints: CheckpointStore, name: str) -> str:
    return read_lineage(checkpoints, name).get("fingerprint", checkpoints.current(name).name)


def _reuse_if_unchanged(context, name: str, fingerprint: str, checkpoints: CheckpointStore):
    """The published checkpoint if its version is ``fingerprint``; None means train.

    Raises ``CheckpointCorrupted`` (naming the file) when the version with this fingerprint exists but no
    longer matches its content manifest, current or not: reusing it would hand damaged weights downstream,
    and retraining could not replace it (a publish keeps an existing version directory). A damaged current
    version of another fingerprint does not block training this one; it stops being current.
    """
    checkpoints.verify_version(name, fingerprint)
    if checkpoints.current_version(name) != fingerprint:
        return None
    published = read_lineage(checkpoints, name)
    path = checkpoints.current(name)
    context.log.info(f"{name}: inputs, config and code unchanged (fingerprint {fingerprint}); "
                     f"reusing {path} instead of retraining")
    return dg.MaterializeResult(data_version=dg.DataVersion(fingerprint), metadata={
        **metadata_of_build(context, name, fingerprint),  # loss curve, metrics, MLflow link of the build
        "reused": True, "fingerprint": fingerprint, "path": dg.MetadataValue.path(str(path)),
        "mlflow_run_id": published.get("mlflow_run_id", "")})


def build_checkpoint(context: dg.AssetExecutionContext, name: str, fingerprint: str, params: dict,
                     build: Callable[[Path, object], list[TrainingSummary]], checkpoints: CheckpointStore,
                     mlflow: MLflowTracking, lineage: dict | None = None,
                     evaluate: Callable[[Path], dict[str, float]] | None = None) -> dg.MaterializeResult:
    """Reuse, or run ``build(staging_dir, mlflow_run)`` in an MLflow run and publish the directory.

    ``evaluate(staging_dir)``: figures measured on the built weights before they are published (a held-out
    check); recorded in lineage.json under ``evaluation``, logged to the run and shown as metadata."""
    reused = _reuse_if_unchanged(context, name, fingerprint, checkpoints)
    if reused is not None:
        return reused
    with mlflow.start_run(run_name=name, tags=mlflow.dagster_tags(context) | {"fingerprint": fingerprint}) as run:
        run.log_params(params)
        # Everything goes into the staging directory and into MLflow before the publish: a step that
        # dies on the way (tracking server gone) publishes nothing, so the rerun retrains and logs again.
        with checkpoints.publish(name, version=fingerprint) as staging:
            summaries = build(staging, run)
            record = {"fingerprint": fingerprint, "dagster_run_id": context.run.run_id, "mlflow_run_id": run.run_id,
                      "params": params, **(lineage or {})}
            (staging / LINEAGE_FILE).write_text(json.dumps(record, indent=2, default=str))
            evaluation = evaluate(staging) if evaluate else {}  # loads the weights as published: record included
            if evaluation:
                (staging / LINEAGE_FILE).write_text(json.dumps(record | {EVALUATION: evaluation}, indent=2, default=str))
            metrics = {}
            for summary in summaries:
                metrics.update({f"{summary.recipe}/{key}": value for key, value in summary.metrics().items()})
            metrics.update({f"{EVALUATION}/{key}": value for key, value in evaluation.items()})
            run.log_metrics(metrics)
            plot_md = {}
            curves = {s.recipe: s.loss_history for s in summaries if s.loss_history}
            if curves:
                png = loss_curve_png(curves, title=name)
                (staging / "loss_curve.png").write_bytes(png)
                run.log_artifact(staging / "loss_curve.png")
                plot_md = {"loss_curve": dg.MetadataValue.md(png_markdown(png, f"{name} loss"))}
    path = checkpoints.current(name)
    context.log.info(f"published {name} at {path} (MLflow run {run.run_id})")
    return dg.MaterializeResult(data_version=dg.DataVersion(fingerprint), metadata={
        "reused": False, "fingerprint": fingerprint, "path": dg.MetadataValue.path(str(path)),
        "params": dg.MetadataValue.json(params), **{key: float(value) for key, value in metrics.items()},
        **plot_md, **mlflow_metadata(run),
    })


def train_stages(context: dg.AssetExecutionContext, name: str, start_dir: Path | None, stages: list[TrainJob],
                 checkpoints: CheckpointStore, mlflow: MLflowTracking, launcher: TrainingLauncher,
                 params: dict, lineage: dict | None = None,
                 evaluate: Callable[[Path], dict[str, float]] | None = None) -> dg.MaterializeResult:
    """Chain training stages (each a Pipes subprocess); the last one's output is checkpoint ``name``.

    Earlier stages are kept as ``stages/<stage>/`` inside the published directory. Each job gets what the
    launch changes (process count, device) and the starting checkpoint's ``trust_remote_code`` before it
    is fingerprinted; the flag is recorded again with this checkpoint for whatever loads it next.
    """
    trust = trusts_remote_code(start_dir)
    stages = [replace(job, trust_remote_code=trust, **launcher.launch_settings()) for job in stages]
    fingerprint = combined_fingerprint([job.fingerprint() for job in stages])
    work_root = Path(launcher.work_root) / name / fingerprint

    def build(staging: Path, run) -> list[TrainingSummary]:
        start_loading_in_background()  # the loss plot's library, while the subprocess trains
        summaries, model_dir = [], start_dir
        for index, job in enumerate(stages):
            stage = job.stage_name
            output = staging if index == len(stages) - 1 else staging / "stages" / stage
            prepared = replace(job, model_dir=str(model_dir) if model_dir else job.model_dir,
                               output_dir=str(output), work_dir=str(work_root / stage),
                               mlflow_tracking_uri=mlflow.tracking_uri, mlflow_run_id=run.run_id)
            (work_root / stage).mkdir(parents=True, exist_ok=True)
            summaries.append(launcher.run(context, prepared, work_root / stage / "job.json",
                                          log_points=run.log_metric_points))
            model_dir = output
        return summaries

    if stages[-1].chat is not None:
        params = params | {f"chat.{key}": value for key, value in stages[-1].chat.record().items()}
    result = build_checkpoint(context, name, fingerprint, params, build, checkpoints, mlflow,
                              stages_lineage(stages, trust) | (lineage or {}), evaluate)
    shutil.rmtree(work_root, ignore_errors=True)  # resume state is only needed until the publish succeeds
    return result


def stages_lineage(stages: list[TrainJob], trust: bool) -> dict:
    """What lineage.json says about the stages: each one's fingerprint, inputs, settings and chat options,
    and the chat options the published weights were trained with (evaluation's default prompt)."""
    lineage = {TRUST_REMOTE_CODE: trust,
               "stages": [{"recipe": j.recipe, "fingerprint": j.fingerprint(), "input_versions": j.input_versions,
                           "settings": asdict(j.settings), **({"chat": j.chat.record()} if j.chat else {})}
                          for j in stages]}
    if stages[-1].chat is not None:
        lineage[CHAT_OPTIONS] = stages[-1].chat.record()
    return lineage


def settings_params(**settings) -> dict:
    """Flatten dataclass settings into MLflow params (``stage.field``)."""
    params = {}
    for prefix, value in settings.items():
        if value is None:
            continue
        for key, item in asdict(value).items():
            params[f"{prefix}.{key}"] = item
    return params
