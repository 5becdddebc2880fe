"""Runs a training job on a Ray cluster as a Ray job, through Dagster Pipes: one trainer, or N Ray Train workers.

The same contract as ``resources/launcher.py`` (``run``, ``launch_settings``), so the checkpoint assets do
not know where they train: the job file, the trainer and its Pipes messages are the same; logs, per-step
metrics (forwarded to the step's MLflow run while it trains) and the summary come back to the step the same
way. Selected in ``pipelines/definitions.py`` by ``LLM_LINEAGE_LAUNCHER=ray``.

Submitted with Ray's ``JobSubmissionClient`` to the dashboard's Jobs API; the messages come back in the job's
log, read by dagster-ray's ``PipesRayJobMessageReader``. (dagster-ray's ``PipesRayJobClient.run`` blocks until
the job ends: the loss curve would reach MLflow only then, and a failed forward could not stop the job.)
With ``num_workers`` > 1 the entrypoint is ``pipelines/training/ray_entry.py`` (a ``TorchTrainer``). Waiting,
stopping and the failure message are ``pipelines/runtime/ray_jobs.py``'s, shared with eval generation on Ray
(``LLM_LINEAGE_GENERATION_ON=ray``, ``pipelines/evaluation/ray_generation.py``).

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

import shlex
from collections.abc import Callable
from pathlib import Path

import dagster as dg
from pydantic import Field

from pipelines.runtime.ray_jobs import DEFAULT_ADDRESS, RayCluster
from pipelines.training import ray_staging
from pipelines.training.job import TrainJob
from pipelines.training.recipes import TrainingSummary
from resources.launcher import MessageRelay


class RayTrainingLauncher(dg.ConfigurableResource):
    """How training runs on Ray: a Ray job per training stage, with ``num_workers`` data-parallel workers."""

    address: str = Field(default=DEFAULT_ADDRESS, description="The Ray dashboard's address (Jobs API).")
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

    def cluster(self) -> RayCluster:
        """Submission, waiting and stopping, shared with generation on Ray (``pipelines/runtime/ray_jobs.py``)."""
        return RayCluster(address=self.address, stage_url=self.stage_url, worker_scratch=self.worker_scratch,
                          python=self.python, project_dir=self.project_dir, poll_s=self.relay_interval_s,
                          termination_timeout_s=self.termination_timeout_s)

    def entrypoint(self, job_file: Path, job_url: str | None = None) -> str:
        """The trainer on the job file (shared paths), or, given ``job_url``, on the job staged there."""
        python = self.cluster().interpreter
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
        cluster = self.cluster()
        client = cluster.client()
        submission_id, job_url = cluster.submission(job.stage_name)
        env = cluster.env(cpu=self.gpus_per_worker <= 0, staged=bool(job_url))
        if job_url:
            ray_staging.stage_job(job, job_url, job_file)
            context.log.info(f"training job and its inputs staged at {job_url}")
        else:
            job.save(job_file)
        with ray_staging.discarded_on_error(job_url):
            summary = self._run(context, cluster, client, job, job_file, env, submission_id, job_url, log_points)
            if job_url:
                ray_staging.collect_output(job_url, Path(job.output_dir))
        return summary

    def _run(self, context, cluster: RayCluster, client, job: TrainJob, job_file: Path, env: dict,
             submission_id: str, job_url: str | None, log_points) -> TrainingSummary:
        from dagster_ray import PipesRayJobMessageReader

        with dg.open_pipes_session(context=context, context_injector=dg.PipesEnvContextInjector(),
                                   message_reader=PipesRayJobMessageReader()) as session:
            relay = MessageRelay(session, log_points)
            params = self.submit_params(context, job, job_file, {**env, **session.get_bootstrap_env_vars()},
                                        submission_id, job_url)
            job_id = client.submit_job(**params)
            session.report_launched({"extras": {"ray_job_id": job_id, "ray_address": client.get_address()}})
            context.log.info(f"Ray job {job_id} submitted to {self.address}: {params['entrypoint']}")
            status = cluster.wait(client, job_id, relay.forward_metrics, context.log.warning)
        relay.forward_metrics()  # what the reader picked up while the session closed
        cluster.check(client, job_id, status, f"{job.recipe} (job file {job_file})")
        context.log.info(f"Ray job {job_id} {status.value}")
        return relay.summary(job_file)
