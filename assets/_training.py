"""The one way a checkpoint asset trains: open an MLflow run, publish atomically, report metadata."""

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import dagster as dg

from assets._metadata import mlflow_metadata
from pipelines.training.recipes import TrainingSummary
from resources import CheckpointStore, MLflowTracking


class TrainOverrides(dg.Config):
    """Launchpad overrides for a training stage; unset fields take the active profile's values."""

    max_steps: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    max_length: int | None = None
    seed: int | None = None


def train_checkpoint(context: dg.AssetExecutionContext, name: str, params: dict,
                     train: Callable[[Path], list[TrainingSummary]], checkpoints: CheckpointStore,
                     mlflow: MLflowTracking) -> dg.MaterializeResult:
    """Run ``train(staging_dir)`` inside an MLflow run and publish the directory as checkpoint ``name``."""
    with mlflow.start_run(run_name=name, tags=mlflow.dagster_tags(context)) as run:
        run.log_params(params)
        with checkpoints.publish(name, version=context.run.run_id) as staging:
            summaries = train(staging)
        metrics = {}
        for summary in summaries:
            prefix = f"{summary.recipe}/" if len(summaries) > 1 else ""
            metrics.update({prefix + key: value for key, value in summary.metrics().items()})
            run.log_metric_history(f"{summary.recipe}/loss", summary.loss_history)
        run.log_metrics(metrics)
    path = checkpoints.current(name)
    context.log.info(f"published {name} at {path} (MLflow run {run.run_id})")
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(path)),
        "params": dg.MetadataValue.json(params),
        **{key: float(value) for key, value in metrics.items()},
        **mlflow_metadata(run),
    })


def settings_params(**settings) -> dict:
    """Flatten dataclass settings into MLflow params (``stage.field``)."""
    params = {}
    for prefix, value in settings.items():
        for key, item in asdict(value).items():
            params[f"{prefix}.{key}"] = item
    return params
