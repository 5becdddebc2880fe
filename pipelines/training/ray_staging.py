"""Ray jobs without a disk shared with the Dagster host: the job, its inputs and its output travel through the bucket.

Host (the Dagster step, ``stage_job``): uploads the job's data file, tokenizer or starting model directory and
chat-template file under ``<url>/inputs/`` and the job itself, every path in it relative, as ``<url>/job.json``.
Worker (the Ray job, ``staged_training``): downloads those into its own scratch directory (``LLM_LINEAGE_SCRATCH``
on the worker, else its temp dir), points the job there, runs the unchanged trainer, and rank 0 uploads the
output directory to ``<url>/output/``. Host again (``collect_output``): downloads that into the checkpoint's
staging directory, publishes as usual, and deletes ``<url>``. The worker keeps only ``fetched.json`` (what it
downloaded, from where) of its scratch directory: a model per job would fill a node's disk.

Single worker: ``python -m pipelines.training.ray_staging --job-url URL`` (the Ray job's entrypoint); N Ray Train
workers: ``pipelines/training/ray_entry.py --job-url URL``, each worker fetching into a directory of its own.
The resumable trainer checkpoints stay on the worker's scratch, so a job restarted on another node starts over.
Imports no Dagster itself: fsspec (``pipelines/object_store.py``) and the trainer.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.object_store import download_tree, open_object_store, remove_tree, unavailable, upload_tree

if TYPE_CHECKING:
    from pipelines.training.job import TrainJob

SCRATCH_ENV = "LLM_LINEAGE_SCRATCH"
JOB_OBJECT = "job.json"
INPUTS, OUTPUT = "inputs", "output"
FETCHED_RECORD = "fetched.json"
INPUT_FIELDS = ("data_file", "tokenizer_dir", "model_dir")  # what the trainer reads; output_dir and work_dir it writes


def _put(local: Path, url: str, name: str) -> str:
    """A file or directory of the host to ``<url>/inputs/<name>``: its reference, relative to the job."""
    if local.is_dir():
        upload_tree(local, f"{url}/{INPUTS}/{name}")
        return f"{INPUTS}/{name}"
    if not local.is_file():
        raise FileNotFoundError(f"the training job's {name} {local} does not exist on this host: nothing to stage")
    reference = f"{INPUTS}/{name}/{local.name}"
    _put_file(local, f"{url}/{reference}")
    return reference


def _put_file(local: Path, url: str) -> None:
    fs, key = open_object_store(url)
    try:
        fs.put_file(str(local), key)
    except Exception as error:
        raise unavailable("upload to", url, error) from error


def stage_job(job: TrainJob, url: str, job_file: Path) -> TrainJob:
    """Upload what ``job`` reads and the job (saved at ``job_file`` too, for the record); returns the staged job,
    whose paths are relative to the directory the worker fetches it into."""
    changes = {"output_dir": OUTPUT, "work_dir": "work"}
    for field in INPUT_FIELDS:
        if value := getattr(job, field):
            changes[field] = _put(Path(value), url, field)
    if job.chat is not None and job.chat.chat_template_file:
        changes["chat"] = replace(job.chat, chat_template_file=_put(Path(job.chat.chat_template_file), url,
                                                                     "chat_template"))
    staged = replace(job, **changes)
    staged.save(job_file)
    _put_file(job_file, f"{url}/{JOB_OBJECT}")
    return staged


def collect_output(url: str, output_dir: Path) -> None:
    """The worker's output into ``output_dir`` (the checkpoint's staging directory); then ``url`` is deleted."""
    try:
        download_tree(f"{url}/{OUTPUT}", output_dir)
    except FileNotFoundError:
        raise RuntimeError(f"the Ray job succeeded but uploaded no output to {url}/{OUTPUT}/") from None
    remove_tree(url)


def discard(url: str) -> None:
    """A failed or stopped job's staged files, best effort (the error that matters is the job's)."""
    try:
        remove_tree(url)
    except Exception:  # noqa: BLE001 - never hides the job's own failure
        pass


def scratch_root() -> Path:
    """This worker's local directory for staged jobs: ``LLM_LINEAGE_SCRATCH``, else the temp dir."""
    return Path(os.environ.get(SCRATCH_ENV) or Path(tempfile.gettempdir()) / "llm-lineage")


def job_directory(url: str, place: str) -> Path:
    """``<scratch>/ray_jobs/<submission id>/<place>``: one per worker, so workers on one node never share files."""
    return scratch_root() / "ray_jobs" / url.rstrip("/").rsplit("/", 1)[-1] / place


def _local(directory: Path, reference: str) -> str:
    return str(directory / reference) if reference and not Path(reference).is_absolute() else reference


def fetch_job(url: str, directory: Path) -> Path:
    """Download the staged job and its inputs into ``directory``; returns the job file, its paths made local."""
    directory.mkdir(parents=True, exist_ok=True)
    fs, key = open_object_store(f"{url}/{JOB_OBJECT}")
    try:
        raw = json.loads(fs.cat_file(key))
    except FileNotFoundError:
        raise FileNotFoundError(f"no staged training job at {url}/{JOB_OBJECT}") from None
    except Exception as error:
        raise unavailable("read", f"{url}/{JOB_OBJECT}", error) from error
    files = download_tree(f"{url}/{INPUTS}", directory / INPUTS)
    for field in (*INPUT_FIELDS, "output_dir", "work_dir"):
        if raw.get(field):
            raw[field] = _local(directory, raw[field])
    if (raw.get("chat") or {}).get("chat_template_file"):
        raw["chat"]["chat_template_file"] = _local(directory, raw["chat"]["chat_template_file"])
    job_file = directory / JOB_OBJECT
    job_file.write_text(json.dumps(raw, indent=2))
    (directory / FETCHED_RECORD).write_text(json.dumps({"url": url, "files": files}, indent=1))
    return job_file


def staged_training(url: str, place: str, train: Callable[[Path], int], upload: bool) -> int:
    """Fetch, ``train(job_file)``, upload the output when ``upload`` (rank 0), then free the scratch directory
    (``fetched.json`` stays, as the record of what this worker fetched)."""
    directory = job_directory(url, place)
    job_file = fetch_job(url, directory)
    try:
        code = train(job_file)
        if upload and code == 0:
            upload_tree(Path(json.loads(job_file.read_text())["output_dir"]), f"{url}/{OUTPUT}")
        return code
    finally:
        for entry in directory.iterdir():
            if entry.name != FETCHED_RECORD:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a training job staged in object storage on this Ray worker")
    parser.add_argument("--job-url", required=True, help="where the launcher staged the job (<url>/job.json)")
    args = parser.parse_args(argv)
    from pipelines.training import train

    return staged_training(args.job_url, "rank-0", lambda job_file: train.main(["--job", str(job_file)]), upload=True)


if __name__ == "__main__":
    raise SystemExit(main())
