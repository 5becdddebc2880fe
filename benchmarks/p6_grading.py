"""P6: grading throughput of every grader on realistic outputs; math-verify with 1 vs N workers.

Each math-verify measurement includes starting its worker pool, as a real ``eval_scores`` run does;
math-verify itself is imported once before any is timed (a process imports it once, so neither side
should carry it). One worker and N workers alternate for ``rounds`` rounds and each side's fastest
round counts, as in P1: on a shared machine a single pair measures the neighbours as much as the code.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from benchmarks.data import realistic_outputs
from benchmarks.harness import BenchRow, cpu_parallel_capacity
from pipelines.evaluation.graders import GRADERS, math_verify_batch

ID, MEASUREMENT = "P6", "grading throughput (samples/s)"
TARGET = "report; math-verify N workers ≥ 1.8× one"
MIN_PARALLEL_SPEEDUP = 1.8


@dataclass(frozen=True)
class GradingBench:
    samples: int = 4000
    workers: int = 2  # the machine's 2 cores
    rounds: int = 5
    seed: int = 0


QUICK = GradingBench(samples=300, rounds=1)


def _throughput(seconds: float, count: int) -> float:
    return round(count / seconds, 1) if seconds else float("inf")


def _rounds(seconds: list[float]) -> str:
    return "/".join(f"{value:.2f}" for value in seconds)


def run(quick: bool = False) -> BenchRow:
    bench = QUICK if quick else GradingBench()
    started = time.perf_counter()
    items = realistic_outputs(bench.samples, bench.seed)
    rates = {}
    for name, grader in GRADERS.items():
        begun = time.perf_counter()
        for output, gold in items:
            grader(output, gold)
        rates[name] = _throughput(time.perf_counter() - begun, len(items))
    import math_verify  # noqa: F401 - imported once, before either side is timed

    seconds: dict[int, list[float]] = {1: [], bench.workers: []}
    grades = {}
    for _ in range(bench.rounds):
        for workers in seconds:
            begun = time.perf_counter()
            grades[workers] = math_verify_batch(items, workers=workers)
            seconds[workers].append(time.perf_counter() - begun)
    one, many = grades[1], grades[bench.workers]
    single = _throughput(min(seconds[1]), len(items))
    parallel = _throughput(min(seconds[bench.workers]), len(items))
    speedup = parallel / single
    cpus = os.cpu_count() or 1
    capacity = cpu_parallel_capacity(processes=bench.workers)
    notes = (", ".join(f"{name} {rate:,.0f}/s" for name, rate in rates.items())
             + f"; math_verify 1 worker {single:,.0f}/s, {bench.workers} workers {parallel:,.0f}/s (best of "
             + f"{bench.rounds} alternating rounds: {_rounds(seconds[1])} s vs {_rounds(seconds[bench.workers])} s)"
             + f"; same grades: {one == many}; {len(items):,} outputs, {cpus} CPUs"
             + f"; a busy-loop calibration got {capacity}× from {bench.workers} processes now (the ceiling)")
    return BenchRow(ID, MEASUREMENT, parallel, single, round(speedup, 2), TARGET,
                    speedup >= MIN_PARALLEL_SPEEDUP and one == many, unit="samples/s (math-verify)",
                    notes=notes, seconds=round(time.perf_counter() - started, 1))
