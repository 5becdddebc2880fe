"""Runs a training job on a Ray cluster as a Ray job, through Dagster Pipes: one trainer, or N Ray Train workers.

The same contract as ``resources/launcher.py`` (``run``, ``launch_settings``), so the checkpoint assets do
not know where they train: the job file, the trainer and its Pipes messages are the same; logs, per-step
metrics (forwarded to the step's MLflow run while it trains) and the summary come back to the step the same
way. Selected in ``pipelines/definitions.py`` by ``LLM_LINEAGE_LAUNCHER=ray``.

Submitted with Ray's ``JobSubmissionClient`` to the dashboard's Jobs API; the messages come back in the job's
log, read by dagster-ray's ``PipesRayJobMessageReader``. (dagster-ray's ``PipesRayJobClient.run`` blocks until
the job ends: the loss curve would reach MLflow only then, and a failed forward could not stop the job.)
With ``num_workers`` > 1 the entrypoint is ``pipelines/training/ray_entry.py`` (a ``TorchTrainer``).

Where it runs: the job's processes import this project: on one machine (a local head, the tests) ``python``
and ``project_dir`` default to this interpreter and checkout; on a real cluster every Ray node needs the
project's image (or package) with its Python, named by ``python`` (``project_dir`` empty when the package is
installed there). Files: with ``stage_url`` (an ``s3://`` prefix; set when the checkpoints are in object
storage) nothing is shared but the bucket: the step uploads the job and its inputs there, the job downloads
them into the worker's own scratch (``worker_scratch``), trains, and uploads the output, which the step
downloads into the checkpoint it publishes (``pipelines/training/ray_staging.py``); the job gets the step's
AWS variables for that. Without it, the job reads and writes the step's paths: ``work_root`` and the
checkpoint store on a filesystem shared with the Dagster steps at the same paths (one machine, or the RWX
volume of ``deploy/k8s``).
"""

from __future__ import annotations

import os
import shlex
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import dagster as dg
from pydantic import Field

from pipelines.object_store import AWS_VARIABLES
from pipelines.training import ray_staging
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
    stage_url: str = Field(default="", description="Object-store prefix (s3://bucket/prefix) through which jobs, "
                           "their inputs and outputs travel: no disk shared with the Ray nodes ('': shared paths).")
    worker_scratch: str = Field(default="", description="With stage_url: the Ray nodes' local directory for a "
                                "job's files, given to the job as LLM_LINEAGE_SCRATCH ('': the node's own "
                                "LLM_LINEAGE_SCRATCH, else its temp dir).")
    relay_interval_s: float = Field(default=0.5, description="How often the step polls the job and forwards "
                                    "the trainer's per-step metrics to its MLflow run.")
    termination_timeout_s: float = Field(default=60, description="Seconds a stopped Ray job gets to end "
                                         "before the step gives up waiting for it.")

    def launch_settings(self) -> dict:
        """As ``TrainingLauncher.launch_settings``: N workers train what N accelerate processes would (world
        size, sharding, global batch), so either launcher reuses the other's checkpoint for the same job."""
        return {"num_processes": max(1, self.num_workers), "device": "gpu" if self.gpus_per_worker > 0 else "cpu"}

    def entrypoint(self, job_file: Path, job_url: str | None = None) -> str:
        """The trainer on the job file (shared paths), or, given ``job_url``, on the job staged there."""
        python = self.python or sys.executable
        job = ["--job-url", job_url] if job_url else ["--job", str(job_file)]
        if self.num_workers <= 1:
            module = "pipelines.training.ray_staging" if job_url else "pipelines.training.train"
            return shlex.join([python, "-m", module, *job])
        return shlex.join([python, "-m", "pipelines.training.ray_entry", *job,
                           "--workers", str(self.num_workers), "--cpus-per-worker", str(self.cpus_per_worker),
                           "--gpus-per-worker", str(self.gpus_per_worker)])

    def submit_params(self, context: dg.AssetExecutionContext, job: TrainJob, job_file: Path, env: dict,
                      submission_id: str, job_url: str | None = None) -> dict:
        """``JobSubmissionClient.submit_job`` arguments: a single trainer reserves a worker's resources for the
        entrypoint; a TorchTrainer driver reserves nothing (its workers do)."""
        params = {"entrypoint": self.entrypoint(job_file, job_url), "runtime_env": {"env_vars": env},
                  "submission_id": submission_id,
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
        status, Ray's message and the end of its log. With ``stage_url`` the job and its inputs go through the
        bucket first, and the job's output comes back from it into ``job.output_dir``."""
        from ray.job_submission import JobSubmissionClient

        client = JobSubmissionClient(self.address)
        submission_id = f"llm-lineage-{job.stage_name.replace('/', '-')}-{uuid.uuid4().hex[:8]}"
        project = self.project_dir or str(PROJECT_ROOT)
        # RAY_COLOR_PREFIX=0: the workers' lines in the job's log (and the step's stdout) without colour codes
        env = trainer_env(project, None, cpu=self.gpus_per_worker <= 0) | {"RAY_COLOR_PREFIX": "0"}
        job_url = f"{self.stage_url.rstrip('/')}/{submission_id}" if self.stage_url else None
        if job_url:
            ray_staging.stage_job(job, job_url, job_file)
            context.log.info(f"training job and its inputs staged at {job_url}")
            env |= self.staging_env()
        else:
            job.save(job_file)
        try:
            summary = self._run(context, client, job, job_file, env, submission_id, job_url, log_points)
            if job_url:
                ray_staging.collect_output(job_url, Path(job.output_dir))
        except BaseException:
            if job_url:
                ray_staging.discard(job_url)
            raise
        return summary

    def staging_env(self) -> dict[str, str]:
        """What a staged job needs to reach the bucket (this step's AWS variables) and where it keeps its files.
        They travel in the job's runtime_env: visible to whoever can read the cluster's job list."""
        env = {name: os.environ[name] for name in AWS_VARIABLES if os.environ.get(name)}
        return env | ({ray_staging.SCRATCH_ENV: self.worker_scratch} if self.worker_scratch else {})

    def _run(self, context, client, job: TrainJob, job_file: Path, env: dict, submission_id: str,
             job_url: str | None, log_points) -> TrainingSummary:
        from dagster_ray import PipesRayJobMessageReader
        from ray.job_submission import JobStatus

        with dg.open_pipes_session(context=context, context_injector=dg.PipesEnvContextInjector(),
                                   message_reader=PipesRayJobMessageReader()) as session:
            relay = MessageRelay(session, log_points)
            params = self.submit_params(context, job, job_file, {**env, **session.get_bootstrap_env_vars()},
                                        submission_id, job_url)
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

