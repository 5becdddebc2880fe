"""Trainer callbacks: progress (step, loss, ETA) to any logger, per-step metrics to a sink (Pipes or
MLflow), the garbage collector back on when training starts, no final-step checkpoint."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

from transformers import TrainerCallback


class ProgressCallback(TrainerCallback):
    """Reports step, loss and ETA through ``emit`` (Dagster Pipes log, or stdout when standalone)."""

    def __init__(self, emit: Callable[[str], None]):
        self._emit, self._started, self._start_step = emit, None, 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._started, self._start_step = time.perf_counter(), state.global_step
        if state.global_step and state.is_world_process_zero:
            self._emit(f"resumed from step {state.global_step} of {state.max_steps}")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs or self._started is None or not state.is_world_process_zero:
            return
        done = state.global_step - self._start_step
        elapsed = time.perf_counter() - self._started
        eta = elapsed / done * (state.max_steps - state.global_step) if done else float("nan")
        self._emit(f"step {state.global_step}/{state.max_steps} loss {float(logs['loss']):.4f} "
                   f"eta {eta:.0f}s")


class ResumeGarbageCollection(TrainerCallback):
    """The training entrypoint (``python -m pipelines.training.train``) turns the garbage collector off
    while it imports torch/transformers/TRL and builds the model and data: ~1 s of full collections
    over objects that all live until exit. Training runs with it on again, and those objects are
    frozen out of its collections."""

    def on_train_begin(self, args, state, control, **kwargs):
        gc.freeze()
        gc.enable()


class SkipFinalCheckpoint(TrainerCallback):
    """The Trainer also checkpoints the last step; the recipe saves the finished model right after, so
    that checkpoint (weights and optimizer state) would be written only to be deleted at publish.
    Periodic checkpoints (``save_steps``) are kept: they are what a crashed run resumes from."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_save = False
        return control


MetricPoint = tuple[str, int, float]  # (key, step, value)


class StepMetricsCallback(TrainerCallback):
    """Per-step training and system metrics (rank 0 only) into ``log_points``: through Pipes to the
    step process that owns the MLflow run, or straight into MLflow when the trainer runs standalone."""

    def __init__(self, log_points: Callable[[list[MetricPoint]], None], prefix: str = ""):
        self._log_points, self._prefix = log_points, prefix

    def on_train_begin(self, args, state, control, **kwargs):
        """Resumed (the previous attempt died, e.g. with the tracking server): this attempt's run gets the
        steps logged before the resume point too, from the checkpoint's history, so its curves are whole."""
        if not state.global_step or not state.is_world_process_zero:
            return
        points = [(f"{self._prefix}{key}", int(entry["step"]), float(value)) for entry in state.log_history
                  if "step" in entry for key, value in entry.items()
                  if key != "step" and isinstance(value, int | float) and not isinstance(value, bool)]
        if points:
            self._log_points(points)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        metrics = {f"{self._prefix}{k}": float(v) for k, v in logs.items() if isinstance(v, int | float)}
        metrics.update({f"system/{k}": v for k, v in system_metrics().items()})
        self._log_points([(key, state.global_step, value) for key, value in metrics.items()])


def system_metrics() -> dict[str, float]:
    import psutil
    import torch

    process = psutil.Process()
    metrics = {"cpu_percent": psutil.cpu_percent(interval=None), "rss_mb": process.memory_info().rss / 2**20}
    if torch.cuda.is_available():
        metrics["gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return metrics
