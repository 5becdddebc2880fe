"""Ray job entrypoint for data-parallel training: the unchanged trainer on N Ray Train workers.

``python -m pipelines.training.ray_entry --job job.json --workers N [--cpus-per-worker C] [--gpus-per-worker G]``
(or ``--job-url URL`` for a job staged in object storage: each worker fetches it, ``ray_staging.py``) runs ``pipelines.training.train`` in a Ray Train ``TorchTrainer`` (gloo on CPU, NCCL with GPUs). Ray Train
joins the process group and sets RANK/WORLD_SIZE as ``torchrun`` would, so the trainer runs as it does under
``accelerate launch``: only rank 0 reports and saves. Rank 0's Dagster Pipes messages (logs, metric batches,
the summary) come back through a Ray queue and this driver prints them, one JSON line each, into the Ray
job's log, which Dagster reads: a worker's own stdout reaches that log behind a ``(RayTrainWorker pid=…)``
prefix, possibly deduplicated, and Pipes would not recognize it. ``resources/ray_launcher.py`` submits it.

Imports neither Dagster nor MLflow: ray and dagster_pipes (the trainer's own dependencies) only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path

from dagster_pipes import PipesMessageWriter, PipesMessageWriterChannel

QUEUE_POLL_S = 0.2


class _QueueChannel(PipesMessageWriterChannel):
    def __init__(self, queue):
        self._queue = queue

    def write_message(self, message) -> None:
        self._queue.put(json.dumps(message))  # blocking: sent before the worker returns, so none is lost


class QueueMessageWriter(PipesMessageWriter):
    """Pipes messages into a ``ray.util.queue.Queue`` (the driver prints them), whatever the reader's params."""

    def __init__(self, queue):
        self._queue = queue

    @contextmanager
    def open(self, params):
        yield _QueueChannel(self._queue)


def train_worker(config: dict) -> None:
    """One Ray Train worker: the trainer's ``main``, rank 0 writing its Pipes messages to the queue."""
    import ray.train

    from pipelines.training import train

    rank = ray.train.get_context().get_world_rank()
    writer = QueueMessageWriter(config["messages"]) if rank == 0 else None

    def run(job_file) -> int:
        return train.main(["--job", str(job_file)], message_writer=writer)

    if config.get("job_url"):  # no shared disk: this worker's own copy of the inputs; rank 0 uploads the output
        from pipelines.training.ray_staging import run_staged

        if run_staged(config["job_url"], f"rank-{rank}", run, upload=rank == 0) != 0:
            raise RuntimeError(f"the trainer of rank {rank} failed")
    else:
        run(config["job"])


def _print_messages(queue, done: threading.Event) -> None:
    """Until ``done`` and the queue is drained: every message on its own stdout line."""
    from ray.util.queue import Empty

    while True:
        try:
            line = queue.get(timeout=QUEUE_POLL_S)
        except Empty:
            if done.is_set():
                return
            continue
        print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    job = parser.add_mutually_exclusive_group(required=True)
    job.add_argument("--job", type=Path, help="TrainJob JSON written by the launcher (on a disk the nodes share)")
    job.add_argument("--job-url", help="a TrainJob staged in object storage by the launcher (ray_staging.py)")
    parser.add_argument("--workers", type=int, required=True, help="Ray Train workers (the job's num_processes)")
    parser.add_argument("--cpus-per-worker", type=float, default=1)
    parser.add_argument("--gpus-per-worker", type=float, default=0)
    args = parser.parse_args(argv)

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    # Ray Train turns the workers' print() into log records; libraries that capture stdout around a print (dill,
    # hashing datasets' map functions, captures dis.dis) would then flood the job's log. Prints stay prints.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")  # propagated to the workers by Ray Train
    ray.init()  # the cluster this job was submitted to (RAY_ADDRESS, set by the job supervisor)
    resources = {"CPU": args.cpus_per_worker, **({"GPU": args.gpus_per_worker} if args.gpus_per_worker else {})}
    messages = Queue(actor_options={"num_cpus": 0})
    done = threading.Event()
    printer = threading.Thread(target=_print_messages, args=(messages, done), daemon=True)
    printer.start()
    if args.job_url:
        from pipelines.training.ray_staging import job_directory

        job, state_dir = {"job_url": args.job_url}, job_directory(args.job_url, "driver")
    else:
        job, state_dir = {"job": str(args.job.resolve())}, args.job.resolve().parent
    trainer = TorchTrainer(
        train_worker, train_loop_config={**job, "messages": messages},
        scaling_config=ScalingConfig(num_workers=args.workers, use_gpu=args.gpus_per_worker > 0,
                                     resources_per_worker=resources),
        # Ray Train's own run state (no checkpoints: the trainer keeps its resumable ones in the job's work_dir)
        run_config=RunConfig(name="train", storage_path=str(state_dir / "ray_train")))
    try:
        trainer.fit()  # raises (the job fails) when a worker does
    finally:
        done.set()
        printer.join()
        if args.job_url:  # Ray Train's run state, on this node's scratch: nothing reads it after the job
            shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
