"""Runs a training job on a Ray cluster as a Ray job, through Dagster Pipes: one trainer, or N Ray Train workers.

The same contract as ``resources/launcher.py`` (``run``, ``launch_settings``), so the checkpoint assets do
not know where they train: the job file, the trainer and its Pipes messages are the same; logs, per-step
metrics (forwarded to the step's MLflow run while it trains) and the summary come back to the step the same
way. Selected in ``pipelines/definitions.py`` by ``LLM_LINEAGE_LAUNCHER=ray``.

Submitted with Ray's ``JobSubmissionClient`` to the dashboard's Jobs API; the messages come back in the job's
log, read by dagster-ray's ``PipesRayJobMessageReader``. (dagster-ray's ``PipesRayJobClient.run`` blocks until
the job ends: the loss curve would reach MLflow only then, and a failed forward could not stop the job.)
With ``num_workers`` > 1 the entrypoint is ``pipelines/training/ray_entry.py`` (a ``TorchTrainer``).

Where it runs: the job's processes read the job file and the training data and write the checkpoint at the
paths the step gives them, and import this project. On one machine (a local head, the tests) that holds as
is: ``python`` and ``project_dir`` default to this interpreter and checkout. On a real cluster every Ray node
needs the project's image (or package) with its Python, named by ``python`` (``project_dir`` empty when the
package is installed there), and ``work_root`` and the checkpoint store on a filesystem shared with the
Dagster steps at the same paths (the RWX volume of ``deploy/k8s``).
"""

from __future__ import annotations

import shlex
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import dagster as dg
from pydantic import Field

from pipelines.training.job import TrainJob
from pipelines.training.recipes import TrainingSummary
from resources.launcher import PROJECT_ROOT, MessageRelay, trainer_env

LOG_TAIL_CHARS = 3000


class RayTrainingLauncher(dg.ConfigurableResource):
    """How training runs on Ray: a Ray job per training stage, with ``num_workers`` data-parallel workers."""

    address: str = Field(default="http://127.0.0.1:8265", description="The Ray dashboard's address (Jobs API).")
    work_root: str = Field(description="Job files and resumable trainer checkpoints (kept until publish); "
                                       "shared with the Ray nodes.")
    num_workers: int = Field(default=1, description="Ray Train data-parallel workers (1: the trainer is the "
                                                    "Ray job's entrypoint itself).")
    cpus_per_worker: float = Field(default=1, description="CPUs each worker reserves on the cluster.")
    gpus_per_worker: float = Field(default=0, description="GPUs each worker reserves (0: train on CPU).")
    python: str = Field(default="", description="The Python on the Ray nodes ('': this interpreter, same machine).")
    project_dir: str = Field(default="", description="Put on the job's PYTHONPATH ('': this checkout; set it to "
                                                     "the project's path in the cluster's image, if not installed).")
    relay_interval_s: float = Field(default=0.5, description="How often the step polls the job and forwards "
                                    "the trainer's per-step metrics to its MLflow run.")
    termination_timeout_s: float = Field(default=60, description="Seconds a stopped Ray job gets to end "
                                         "before the step gives up waiting for it.")

    def launch_settings(self) -> dict:
        """As ``TrainingLauncher.launch_settings``: N workers train what N accelerate processes would (world
        size, sharding, global batch), so either launcher reuses the other's checkpoint for the same job."""
        return {"num_processes": max(1, self.num_workers), "device": "gpu" if self.gpus_per_worker > 0 else "cpu"}

    def entrypoint(self, job_file: Path) -> str:
        python = self.python or sys.executable
        if self.num_workers <= 1:
            return shlex.join([python, "-m", "pipelines.training.train", "--job", str(job_file)])
        return shlex.join([python, "-m", "pipelines.training.ray_entry", "--job", str(job_file),
                           "--workers", str(self.num_workers), "--cpus-per-worker", str(self.cpus_per_worker),
                           "--gpus-per-worker", str(self.gpus_per_worker)])

    def submit_params(self, context: dg.AssetExecutionContext, job: TrainJob, job_file: Path, env: dict) -> dict:
        """``JobSubmissionClient.submit_job`` arguments: a single trainer reserves a worker's resources for the
        entrypoint; a TorchTrainer driver reserves nothing (its workers do)."""
        params = {"entrypoint": self.entrypoint(job_file), "runtime_env": {"env_vars": env},
                  "submission_id": f"llm-lineage-{job.stage_name.replace('/', '-')}-{uuid.uuid4().hex[:8]}",
                  "metadata": {"dagster_run_id": context.run.run_id, "recipe": job.recipe}}
        if self.num_workers <= 1:
            params["entrypoint_num_cpus"] = self.cpus_per_worker
            if self.gpus_per_worker:
                params["entrypoint_num_gpus"] = self.gpus_per_worker
        return params

    def run(self, context: dg.AssetExecutionContext, job: TrainJob, job_file: Path,
            log_points: Callable[[list[tuple[str, int, float]]], None] | None = None) -> TrainingSummary:
        """Submit, stream the job's log into the Dagster run, forward per-step metrics to ``log_points`` while
        it trains, and return the trainer's summary. If the step stops (the run is terminated, or forwarding
        failed) the Ray job is stopped before the error is raised; a job that fails fails the step with its
        status, Ray's message and the end of its log."""
        from dagster_ray import PipesRayJobMessageReader
        from ray.job_submission import JobStatus, JobSubmissionClient

        job.save(job_file)
        client = JobSubmissionClient(self.address)
        project = self.project_dir or str(PROJECT_ROOT)
        # RAY_COLOR_PREFIX=0: the workers' lines in the job's log (and the step's stdout) without colour codes
        env = trainer_env(project, None, cpu=self.gpus_per_worker <= 0) | {"RAY_COLOR_PREFIX": "0"}
        with dg.open_pipes_session(context=context, context_injector=dg.PipesEnvContextInjector(),
                                   message_reader=PipesRayJobMessageReader()) as session:
            relay = MessageRelay(session, log_points)
            params = self.submit_params(context, job, job_file, {**env, **session.get_bootstrap_env_vars()})
            job_id = client.submit_job(**params)
            session.report_launched({"extras": {"ray_job_id": job_id, "ray_address": client.get_address()}})
            context.log.info(f"Ray job {job_id} submitted to {self.address}: {params['entrypoint']}")
            try:
                while not (status := client.get_job_status(job_id)).is_terminal():
                    relay.forward_metrics()
                    time.sleep(self.relay_interval_s)
            except BaseException:  # forwarding failed, or the run was terminated: stop the Ray job too
                self._stop(context, client, job_id)
                raise
        relay.forward_metrics()  # what the reader picked up while the session closed
        if status != JobStatus.SUCCEEDED:
            info = client.get_job_info(job_id)
            log_tail = client.get_job_logs(job_id)[-LOG_TAIL_CHARS:]
            raise RuntimeError(f"Ray job {job_id} for {job.recipe} ended {status.value}: {info.message} "
                               f"(job file {job_file})\n--- end of the job's log ---\n{log_tail}")
        context.log.info(f"Ray job {job_id} {status.value}")
        return relay.summary(job_file)

    def _stop(self, context, client, job_id: str) -> None:
        """Ray SIGTERMs the entrypoint, then SIGKILLs it; its Train workers and queue die with the driver."""
        context.log.warning(f"stopping Ray job {job_id}")
        client.stop_job(job_id)
        deadline = time.monotonic() + self.termination_timeout_s
        while not client.get_job_status(job_id).is_terminal() and time.monotonic() < deadline:
            time.sleep(0.5)
        context.log.warning(f"Ray job {job_id}: {client.get_job_status(job_id).value}")

