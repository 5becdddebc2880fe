"""Training entrypoint: ``python -m pipelines.training.train --job job.json``.

Works standalone, as a Dagster Pipes subprocess (logs, progress, per-step metrics and the final
summary stream into the Dagster step, which logs the metrics to its MLflow run), and under
``accelerate launch --num_processes N`` (only rank 0 talks to Dagster or MLflow, and saves).
Periodic checkpoints go to the job's work directory; a rerun of the same job resumes from the newest one.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.runtime.orphans import die_with_parent
from pipelines.training.job import METRIC_POINTS_MESSAGE, SUMMARY_MESSAGE, TrainJob, read_rows
from pipelines.training.recipes import RunOptions, TrainingSummary, dpo, grpo, pretrain_base, sft

if TYPE_CHECKING:
    from pipelines.training.callbacks import MetricPoint

SUMMARY_FILE = "training_summary.json"


def is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def metrics_sink(job: TrainJob, pipes) -> Callable[[list[MetricPoint]], None] | None:
    """Where per-step metrics go. Under Pipes, to the step process that owns the MLflow run: the
    trainer then never imports MLflow (~2 s of every training subprocess on the critical path).
    Standalone with a run id in the job, straight to MLflow. Ranks other than 0 log nothing."""
    if not is_rank_zero():
        return None
    if pipes is not None:
        return lambda points: pipes.report_custom_message({METRIC_POINTS_MESSAGE: points})
    if job.mlflow_run_id and job.mlflow_tracking_uri:
        from pipelines.tracking import RunLogger

        return RunLogger(job.mlflow_tracking_uri, job.mlflow_run_id).log_metric_points
    return None


def run_job(job: TrainJob, emit=print, log_points: Callable[[list[MetricPoint]], None] | None = None
            ) -> TrainingSummary:
    from pipelines.training.callbacks import ProgressCallback, ResumeGarbageCollection, StepMetricsCallback

    job.validate_runnable()
    callbacks = [ProgressCallback(emit), ResumeGarbageCollection()]
    if log_points is not None:
        callbacks.append(StepMetricsCallback(log_points, job.metric_prefix))
    options = RunOptions(work_dir=Path(job.work_dir) if job.work_dir else None, save_steps=job.save_steps,
                         callbacks=callbacks, lora=job.lora, trust_remote_code=job.trust_remote_code,
                         assistant_only_loss=job.assistant_only_loss, chat=job.chat)
    if job.trust_remote_code:
        emit("trust_remote_code is ON for this job (explicit opt-in): model code from the checkpoint will run")
    rows = read_rows(Path(job.data_file))
    output = Path(job.output_dir)
    if job.recipe == "pretrain":
        return pretrain_base([r["text"] for r in rows], Path(job.tokenizer_dir), job.model_shape, job.settings,
                             output, options)
    if job.recipe == "sft":
        return sft(Path(job.model_dir), rows, job.settings, output, recipe=job.stage_name, options=options)
    if job.recipe == "dpo":
        return dpo(Path(job.model_dir), rows, job.settings, job.beta, output, options)
    return grpo(Path(job.model_dir), rows, job.settings, job.grpo, output, options)


def main(argv: list[str] | None = None, message_writer=None) -> int:
    """``message_writer``: where rank 0's Pipes messages go, when not to stdout (a Ray Train worker's stdout
    reaches the job log prefixed: ``pipelines/training/ray_entry.py`` sends them through its driver instead)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, type=Path, help="TrainJob JSON written by the launcher")
    args = parser.parse_args(argv)
    job = TrainJob.load(args.job)
    with ExitStack() as stack:
        pipes = None
        if is_rank_zero() and "DAGSTER_PIPES_CONTEXT" in os.environ:
            from dagster_pipes import open_dagster_pipes

            pipes = stack.enter_context(open_dagster_pipes(message_writer=message_writer))
        emit = pipes.log.info if pipes else (lambda message: print(message, flush=True))
        summary = run_job(job, emit, metrics_sink(job, pipes))
        if is_rank_zero():
            (Path(job.output_dir) / SUMMARY_FILE).write_text(json.dumps(asdict(summary), indent=2))
            emit(f"{summary.recipe}: {summary.steps} steps, final loss {summary.final_loss:.4f}, "
                 f"{summary.runtime_s:.0f}s (resumed from step {summary.resumed_from_step})")
            if pipes:
                pipes.report_custom_message({SUMMARY_MESSAGE: asdict(summary)})
    return 0


if __name__ == "__main__":
    die_with_parent()  # an orphaned trainer (its step was killed) stops instead of training on
    gc.disable()  # until training starts (callbacks.ResumeGarbageCollection): imports and set-up only
    exit_code = main()
    gc.freeze()  # exiting with torch loaded spends ~1 s collecting what the OS reclaims anyway
    sys.exit(exit_code)
