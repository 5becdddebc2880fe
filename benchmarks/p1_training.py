"""P1: pretraining through the DAG vs a plain TRL script: same model, data and steps (tokens/s, wall).

Ours is ``dg.materialize`` of ``base_checkpoint`` (Dagster run, MLflow run, Pipes subprocess with
per-step MLflow metrics and resumable checkpoints, publish, loss plot), timed from the call to its
return. The baseline is ``benchmarks/plain_trl_pretrain.py`` as a subprocess, timed the same way
(interpreter start and imports included for both). Upstream assets (raw data, tokenizer) are
materialized first, untimed. Both count the tokens TRL reports; the ratio is of tokens per wall second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.harness import BenchRow

ID, MEASUREMENT, TARGET = "P1", "training via DAG vs plain TRL (tokens/s)", "≥ 0.97×"
MIN_RATIO = 0.97
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class TrainingBench:
    profile: str = "tiny"
    max_steps: int = 120


QUICK = TrainingBench(profile="smoke", max_steps=6)


def _materialize(selection: list[str], home: Path, profile: str, run_config: dict | None = None) -> float:
    import dagster as dg

    from pipelines.definitions import all_assets, all_checks, default_resources

    started = time.perf_counter()
    result = dg.materialize([*all_assets, *all_checks], selection=selection, run_config=run_config or {},
                            resources=default_resources(home=home, profile=profile),
                            instance=dg.DagsterInstance.ephemeral(), raise_on_error=True)
    assert result.success
    return time.perf_counter() - started


def _plain_job(home: Path, bench: TrainingBench) -> dict:
    """The plain script's inputs: exactly what the DAG trained on (corpus file, tokenizer, settings, shape)."""
    from pipelines.profiles import PROFILES

    lineage = json.loads((home / "checkpoints" / "base_checkpoint" / "current" / "lineage.json").read_text())
    return {"data_file": str(home / "work" / "base_checkpoint" / "corpus.jsonl"),
            "tokenizer_dir": str((home / "checkpoints" / "tokenizer" / "current").resolve()),
            "settings": lineage["stages"][0]["settings"], "model_shape": asdict(PROFILES[bench.profile].model)}


def run(quick: bool = False) -> BenchRow:
    bench = QUICK if quick else TrainingBench()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-p1-") as scratch:
        home = Path(scratch) / "lineage"
        upstream = ["raw_problems", "eval_suites", "training_problems", "raw_corpus", "tokenizer"]
        _materialize(upstream, home, bench.profile)
        dag_seconds = _materialize(["base_checkpoint"], home, bench.profile,
                                   {"ops": {"base_checkpoint": {"config": {"max_steps": bench.max_steps}}}})
        published = home / "checkpoints" / "base_checkpoint" / "current"
        dag_summary = json.loads((published / "training_summary.json").read_text())
        job_file = Path(scratch) / "plain_job.json"
        job_file.write_text(json.dumps(_plain_job(home, bench)))
        begun = time.perf_counter()
        subprocess.run([sys.executable, "-m", "benchmarks.plain_trl_pretrain", "--job", str(job_file),
                        "--output", str(Path(scratch) / "plain")], cwd=PROJECT_ROOT, check=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL)
        plain_seconds = time.perf_counter() - begun
        plain_summary = json.loads((Path(scratch) / "plain" / "summary.json").read_text())
    dag_rate = dag_summary["tokens"] / dag_seconds
    plain_rate = plain_summary["tokens"] / plain_seconds
    speed = dag_rate / plain_rate
    notes = (f"{bench.profile} profile, pretrain {bench.max_steps} steps; DAG {dag_seconds:.1f}s wall "
             f"(trainer {dag_summary['runtime_s']:.1f}s), plain {plain_seconds:.1f}s; tokens "
             f"{dag_summary['tokens']:,} vs {plain_summary['tokens']:,}")
    return BenchRow(ID, MEASUREMENT, round(dag_rate, 1), round(plain_rate, 1), round(speed, 3), TARGET,
                    speed >= MIN_RATIO and dag_summary["tokens"] == plain_summary["tokens"], unit="tokens/s",
                    notes=notes, seconds=round(time.perf_counter() - started, 1))
