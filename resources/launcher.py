"""Runs a training job as a Dagster Pipes subprocess: one process, or N via ``accelerate launch``.

The DAG never changes between a laptop, one GPU and several: only ``num_processes`` (and the machine)
do. On Kubernetes, ``dagster_k8s.PipesK8sClient`` runs the same command with the same contract.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import dagster as dg
from pydantic import Field

from pipelines.training.job import TrainJob
from pipelines.training.recipes import TrainingSummary

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class TrainingLauncher(dg.ConfigurableResource):
    """How training processes are started."""

    work_root: str = Field(description="Job files and resumable trainer checkpoints (kept until publish).")
    num_processes: int = Field(default=1, description="Data-parallel processes (accelerate launch when > 1).")
    force_cpu: bool = Field(default=False, description="Train on CPU even where CUDA is available.")
    def command(self, job_file: Path, port: int) -> list[str]:
        entry = ["-m", "pipelines.training.train", "--job", str(job_file)]
        if self.num_processes <= 1:
            return [sys.executable, *entry]
        # accelerate's --cpu path starts a single process; its torch.distributed.run path (--multi_gpu)
        # starts N, and on a machine without visible CUDA the Trainer joins them with gloo on the CPU.
        return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(self.num_processes),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--multi_gpu",
                "--main_process_port", str(port), *entry]

    def run(self, context: dg.AssetExecutionContext, job: TrainJob, job_file: Path) -> TrainingSummary:
        """Launch, stream logs into the Dagster run, and return the subprocess's summary."""
        job.save(job_file)
        env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
        if self.force_cpu or not _gpu_present():
            env["CUDA_VISIBLE_DEVICES"] = ""
        invocation = dg.PipesSubprocessClient(cwd=str(PROJECT_ROOT)).run(
            context=context, command=self.command(job_file, _free_port()), env=env)
        messages = [m["summary"] for m in invocation.get_custom_messages() if "summary" in m]
        if not messages:
            raise RuntimeError(f"training subprocess for {job.recipe} reported no summary (job file {job_file})")
        summary = messages[-1]
        summary["loss_history"] = [tuple(point) for point in summary["loss_history"]]
        return TrainingSummary(**summary)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _gpu_present() -> bool:
    """An NVIDIA or AMD (ROCm) device node exists. Not ``torch.cuda.is_available()``: importing torch
    in the step process only to launch another process that imports it again cost ~1.7 s per step."""
    devices = Path("/dev")
    return any(devices.glob("nvidia[0-9]*")) or (devices / "kfd").exists()
