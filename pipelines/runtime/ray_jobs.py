"""A Ray job of this project, Dagster-free: where the cluster is, what a job's process needs, waiting for it, stopping
it when the caller stops, and a failure that says why. Shared by the training launcher (``resources/ray_launcher.py``,
which adds Dagster Pipes around it) and generation on Ray (``pipelines/evaluation/ray_generation.py``).

The environment's settings (``cluster_settings``) are the ones ``pipelines/definitions.py`` gives the training
launcher: ``LLM_LINEAGE_RAY_ADDRESS`` (the dashboard's Jobs API), ``LLM_LINEAGE_RAY_STAGING_URL`` (default
``<LLM_LINEAGE_CHECKPOINT_URL>/_ray_jobs``: jobs and their files travel through the bucket, ``ray_staging.py``) and
``LLM_LINEAGE_RAY_WORKER_SCRATCH`` (the Ray nodes' local directory for staged files).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pipelines.object_store import AWS_VARIABLES
from pipelines.training.ray_staging import SCRATCH_ENV

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
LOG_TAIL_CHARS = 3000


def cluster_settings(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The Ray cluster and staging the environment names (``RayCluster`` fields, ``RayTrainingLauncher`` config)."""
    checkpoint_url = environ.get("LLM_LINEAGE_CHECKPOINT_URL")
    return {"address": environ.get("LLM_LINEAGE_RAY_ADDRESS") or DEFAULT_ADDRESS,
            "stage_url": environ.get("LLM_LINEAGE_RAY_STAGING_URL") or (
                f"{checkpoint_url.rstrip('/')}/_ray_jobs" if checkpoint_url else ""),
            "worker_scratch": environ.get("LLM_LINEAGE_RAY_WORKER_SCRATCH", "")}


def process_env(project_dir: str, pythonpath: str | None, cpu: bool) -> dict[str, str]:
    """What a trainer or generation process needs in its environment, wherever it is started (here or on a Ray node)."""
    env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [project_dir, pythonpath]))}
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


@dataclass(frozen=True)
class RayCluster:
    """Where this project's Ray jobs run and how the step waits for them (see ``RayTrainingLauncher``'s fields)."""

    address: str = DEFAULT_ADDRESS
    stage_url: str = ""
    worker_scratch: str = ""
    python: str = ""  # on the Ray nodes ('': this interpreter, same machine)
    project_dir: str = ""  # on the job's PYTHONPATH ('': this checkout)
    poll_s: float = 0.5
    termination_timeout_s: float = 60

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> RayCluster:
        return cls(**cluster_settings(environ))

    @property
    def interpreter(self) -> str:
        return self.python or sys.executable

    def client(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address)

    def submission(self, name: str) -> tuple[str, str | None]:
        """A new job's submission id and, with ``stage_url``, the prefix its files are staged under."""
        submission_id = f"llm-lineage-{name.replace('/', '-')}-{uuid.uuid4().hex[:8]}"
        return submission_id, f"{self.stage_url.rstrip('/')}/{submission_id}" if self.stage_url else None

    def env(self, cpu: bool, staged: bool) -> dict[str, str]:
        """The job's ``runtime_env`` variables. Staged: this step's AWS variables (the bucket) and the nodes' scratch;
        they travel in the job's runtime_env, visible to whoever can read the cluster's job list."""
        # RAY_COLOR_PREFIX=0: the workers' lines in the job's log (and the step's stdout) without colour codes
        env = process_env(self.project_dir or str(PROJECT_ROOT), None, cpu) | {"RAY_COLOR_PREFIX": "0"}
        if staged:
            env |= {name: os.environ[name] for name in AWS_VARIABLES if os.environ.get(name)}
            env |= {SCRATCH_ENV: self.worker_scratch} if self.worker_scratch else {}
        return env

    def wait(self, client, job_id: str, on_poll: Callable[[], None] = lambda: None,
             warn: Callable[[str], None] = print):
        """Until the job ends (its ``JobStatus``), calling ``on_poll`` between polls. If the caller stops (the run is
        terminated, or ``on_poll`` failed) the job is stopped before the error is raised."""
        try:
            while not (status := client.get_job_status(job_id)).is_terminal():
                on_poll()
                time.sleep(self.poll_s)
        except BaseException:
            self.stop(client, job_id, warn)
            raise
        return status

    def stop(self, client, job_id: str, warn: Callable[[str], None] = print) -> None:
        """Ray SIGTERMs the entrypoint, then SIGKILLs it; its Train workers and queue die with the driver."""
        warn(f"stopping Ray job {job_id}")
        client.stop_job(job_id)
        deadline = time.monotonic() + self.termination_timeout_s
        while not client.get_job_status(job_id).is_terminal() and time.monotonic() < deadline:
            time.sleep(0.5)
        warn(f"Ray job {job_id}: {client.get_job_status(job_id).value}")

    def check(self, client, job_id: str, status, what: str) -> None:
        """Raise unless the job succeeded: its status, Ray's message and the end of its log."""
        if status.value != "SUCCEEDED":
            info, log_tail = client.get_job_info(job_id), client.get_job_logs(job_id)[-LOG_TAIL_CHARS:]
            raise RuntimeError(f"Ray job {job_id} for {what} ended {status.value}: {info.message}\n"
                               f"--- end of the job's log ---\n{log_tail}")
