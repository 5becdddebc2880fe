"""Ray jobs without a disk shared with the Dagster host: the job, its inputs and its output travel through the bucket.

Host (the Dagster step, ``stage``): uploads the files and directories a job's input fields name (a training job's
data file, tokenizer or starting model and chat-template file; a generation job's checkpoint and chat template)
under ``<url>/inputs/`` and the job itself, every path in it relative, as ``<url>/job.json``. Worker (the Ray job,
``run_staged``): downloads those into its own scratch directory (``LLM_LINEAGE_SCRATCH`` on the worker, else its
temp dir), points the job there, runs it, and uploads its output directory to ``<url>/output/`` (rank 0 when
several train). Host again (``collect_output``): downloads that into the checkpoint's staging directory (or the
generations' temp dir) and deletes ``<url>``. The worker keeps only ``fetched.json`` (what it downloaded, from
where) of its scratch directory: a model per job would fill a node's disk.

Training, single worker: ``python -m pipelines.training.ray_staging --job-url URL`` (the Ray job's entrypoint); N
Ray Train workers: ``pipelines/training/ray_entry.py --job-url URL``, each worker fetching into a directory of its
own; generation: ``pipelines/evaluation/ray_generation.py``. The resumable trainer checkpoints stay on the worker's
scratch, so a job restarted on another node starts over. Imports no Dagster itself: fsspec
(``pipelines/object_store.py``) and the trainer.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.object_store import download_tree, open_object_store, remove_tree, unavailable, upload_tree

if TYPE_CHECKING:
    from pipelines.training.job import TrainJob

SCRATCH_ENV = "LLM_LINEAGE_SCRATCH"
JOB_OBJECT = "job.json"
INPUTS, OUTPUT = "inputs", "output"
FETCHED_RECORD = "fetched.json"
# A job's fields naming host files it reads (dotted: nested) and directories it writes, in its JSON
TRAIN_INPUTS = ("data_file", "tokenizer_dir", "model_dir", "chat.chat_template_file")
TRAIN_OUTPUTS = {"output_dir": OUTPUT, "work_dir": "work"}


def _put(local: Path, url: str, name: str) -> str:
    """A file or directory of the host to ``<url>/inputs/<name>``: its reference, relative to the job."""
    if local.is_dir():
        upload_tree(local, f"{url}/{INPUTS}/{name}")
        return f"{INPUTS}/{name}"
    if not local.is_file():
        raise FileNotFoundError(f"the job's {name} {local} does not exist on this host: nothing to stage")
    reference = f"{INPUTS}/{name}/{local.name}"
    _put_file(local, f"{url}/{reference}")
    return reference


def _put_file(local: Path, url: str) -> None:
    fs, key = open_object_store(url)
    try:
        fs.put_file(str(local), key)
    except Exception as error:
        raise unavailable("upload to", url, error) from error


def _field(raw: dict, key: str) -> tuple[dict, str]:
    """The dict holding the dotted field ``key`` of a job (``chat.chat_template_file``), and the field's name."""
    *parents, name = key.split(".")
    for parent in parents:
        raw = raw.get(parent) or {}
    return raw, name


def stage(raw: dict, inputs: tuple[str, ...], outputs: dict[str, str], url: str, job_file: Path) -> dict:
    """Upload what the ``inputs`` fields of the job ``raw`` name, then the job with those fields and its ``outputs``
    ({field: directory}) relative to the directory the worker fetches it into, as ``<url>/job.json`` (saved at
    ``job_file`` too)."""
    staged = copy.deepcopy(raw)
    for key in inputs:
        holder, name = _field(staged, key)
        if holder.get(name):
            holder[name] = _put(Path(holder[name]), url, name)
    staged |= outputs
    job_file.write_text(json.dumps(staged, indent=2))
    _put_file(job_file, f"{url}/{JOB_OBJECT}")
    return staged


def stage_job(job: TrainJob, url: str, job_file: Path) -> TrainJob:
    """``stage`` for a training job; returns the staged job."""
    from pipelines.training.job import TrainJob

    stage(json.loads(job.save(job_file).read_text()), TRAIN_INPUTS, TRAIN_OUTPUTS, url, job_file)
    return TrainJob.load(job_file)


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


@contextmanager
def discarded_on_error(url: str | None) -> Iterator[None]:
    """Around a staged job's run and ``collect_output``: ``url``'s files are discarded if they fail or are stopped."""
    try:
        yield
    except BaseException:
        if url:
            discard(url)
        raise


def scratch_root() -> Path:
    """This worker's local directory for staged jobs: ``LLM_LINEAGE_SCRATCH``, else the temp dir."""
    return Path(os.environ.get(SCRATCH_ENV) or Path(tempfile.gettempdir()) / "llm-lineage")


def job_directory(url: str, place: str) -> Path:
    """``<scratch>/ray_jobs/<submission id>/<place>``: one per worker, so workers on one node never share files."""
    return scratch_root() / "ray_jobs" / url.rstrip("/").rsplit("/", 1)[-1] / place


def _local(directory: Path, reference: str) -> str:
    return str(directory / reference) if reference and not Path(reference).is_absolute() else reference


def fetch_job(url: str, directory: Path, fields: tuple[str, ...]) -> Path:
    """Download the staged job and its inputs into ``directory``; returns the job file, its ``fields`` made local."""
    directory.mkdir(parents=True, exist_ok=True)
    fs, key = open_object_store(f"{url}/{JOB_OBJECT}")
    try:
        raw = json.loads(fs.cat_file(key))
    except FileNotFoundError:
        raise FileNotFoundError(f"no staged job at {url}/{JOB_OBJECT}") from None
    except Exception as error:
        raise unavailable("read", f"{url}/{JOB_OBJECT}", error) from error
    files = download_tree(f"{url}/{INPUTS}", directory / INPUTS)
    for key in fields:
        holder, name = _field(raw, key)
        if holder.get(name):
            holder[name] = _local(directory, holder[name])
    job_file = directory / JOB_OBJECT
    job_file.write_text(json.dumps(raw, indent=2))
    (directory / FETCHED_RECORD).write_text(json.dumps({"url": url, "files": files}, indent=1))
    return job_file


def run_staged(url: str, place: str, run: Callable[[Path], int], upload: bool,
               fields: tuple[str, ...] = (*TRAIN_INPUTS, *TRAIN_OUTPUTS)) -> int:
    """Fetch, ``run(job_file)``, upload the output when ``upload`` (rank 0), then free the scratch directory
    (``fetched.json`` stays, as the record of what this worker fetched)."""
    directory = job_directory(url, place)
    job_file = fetch_job(url, directory, fields)
    try:
        code = run(job_file)
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

    return run_staged(args.job_url, "rank-0", lambda job_file: train.main(["--job", str(job_file)]), upload=True)


if __name__ == "__main__":
    raise SystemExit(main())
