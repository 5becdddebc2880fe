"""Runs a training job as a Dagster Pipes subprocess: one process, or N via ``accelerate launch``.

The DAG never changes between a laptop, one GPU and several: only ``num_processes`` (and the machine)
do. On Kubernetes, ``dagster_k8s.PipesK8sClient`` runs the same command with the same contract.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import dagster as dg
from pydantic import Field

from pipelines.runtime.devices import gpu_present
from pipelines.runtime.orphans import PARENT_PID_ENV
from pipelines.runtime.ray_jobs import process_env
from pipelines.training.job import METRIC_POINTS_MESSAGE, SUMMARY_MESSAGE, TrainJob
from pipelines.training.recipes import TrainingSummary

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class TrainingLauncher(dg.ConfigurableResource):
    """How training processes are started."""

    work_root: str = Field(description="Job files and resumable trainer checkpoints (kept until publish).")
    num_processes: int = Field(default=1, description="Data-parallel processes (accelerate launch when > 1).")
    force_cpu: bool = Field(default=False, description="Train on CPU even where CUDA is available.")
    relay_interval_s: float = Field(default=0.5, description="How often the step forwards the trainer's "
                                    "per-step metrics to its MLflow run while training runs.")
    termination_timeout_s: float = Field(default=20, description="Seconds a stopped trainer gets to exit "
                                         "after SIGINT before it is killed.")

    def launch_settings(self) -> dict:
        """What this launcher changes in the weights it trains, for a job's fingerprint: the process count
        (global batch, data sharding) and the device (precision)."""
        return {"num_processes": max(1, self.num_processes),
                "device": "cpu" if self.force_cpu or not gpu_present() else "gpu"}

    def command(self, job_file: Path, port: int) -> list[str]:
        entry = ["-m", "pipelines.training.train", "--job", str(job_file)]
        if self.num_processes <= 1:
            return [sys.executable, *entry]
        # accelerate's --cpu path starts a single process; its torch.distributed.run path (--multi_gpu)
        # starts N, and on a machine without visible CUDA the Trainer joins them with gloo on the CPU.
        return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(self.num_processes),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--multi_gpu",
                "--main_process_port", str(port), *entry]

    def run(self, context: dg.AssetExecutionContext, job: TrainJob, job_file: Path,
            log_points: Callable[[list[tuple[str, int, float]]], None] | None = None) -> TrainingSummary:
        """Launch, stream logs into the Dagster run, forward per-step metrics to ``log_points`` while it
        trains, and return the subprocess's summary.

        The step process owns the MLflow run, so the trainer never imports MLflow. If forwarding fails
        (the tracking server is gone), the trainer is stopped at once and the error is raised: its
        periodic checkpoints stay in the work directory for the rerun to resume from.
        """
        job.save(job_file)
        env = process_env(str(PROJECT_ROOT), os.environ.get("PYTHONPATH"), cpu=self.force_cpu or not gpu_present())
        if self.num_processes <= 1:  # the trainer is our child: it dies with this step (pipelines/runtime/orphans.py)
            env[PARENT_PID_ENV] = str(os.getpid())
        with dg.open_pipes_session(context=context, context_injector=dg.PipesTempFileContextInjector(),
                                   message_reader=dg.PipesTempFileMessageReader()) as session:
            relay = MessageRelay(session, log_points)
            process = subprocess.Popen(self.command(job_file, _free_port()), cwd=PROJECT_ROOT,
                                       env={**os.environ, **env, **session.get_bootstrap_env_vars()})
            try:
                while not _exited(process, self.relay_interval_s):
                    relay.forward_metrics()
            except BaseException:  # forwarding failed, or the run was interrupted: stop the trainer too
                _stop(process, self.termination_timeout_s)
                raise
        relay.forward_metrics()  # what the reader picked up while the session closed
        if process.returncode != 0:
            raise RuntimeError(f"training subprocess for {job.recipe} exited with code {process.returncode} "
                               f"(job file {job_file})")
        return relay.summary(job_file)


class MessageRelay:
    """The custom messages a trainer sent through Pipes: metric batches, forwarded as they arrive, and the
    final summary (shared by the local and the Ray launcher)."""

    def __init__(self, session, log_points):
        self._session, self._log_points, self._forwarded = session, log_points, 0

    def forward_metrics(self) -> None:
        messages = self._session.get_custom_messages()
        new, self._forwarded = messages[self._forwarded:], len(messages)
        points = [tuple(point) for message in new for point in message.get(METRIC_POINTS_MESSAGE, [])]
        if points and self._log_points is not None:
            self._log_points(points)

    def summary(self, job_file: Path) -> TrainingSummary:
        summaries = [m[SUMMARY_MESSAGE] for m in self._session.get_custom_messages() if SUMMARY_MESSAGE in m]
        if not summaries:
            raise RuntimeError(f"training subprocess reported no summary (job file {job_file})")
        summary = dict(summaries[-1])
        summary["loss_history"] = [tuple(point) for point in summary["loss_history"]]
        return TrainingSummary(**summary)


def _exited(process: subprocess.Popen, timeout_s: float) -> bool:
    try:
        process.wait(timeout=timeout_s)
        return True
    except subprocess.TimeoutExpired:
        return False


def _stop(process: subprocess.Popen, timeout_s: float) -> None:
    """SIGINT first (the trainer exits cleanly, like Ctrl-C), then SIGKILL."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
