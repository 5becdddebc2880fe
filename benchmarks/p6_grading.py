"""P6: grading throughput of every grader on realistic outputs; math-verify with 1 vs N workers.

Each math-verify measurement includes starting its worker pool, as a real ``eval_scores`` run does.
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
    seed: int = 0


QUICK = GradingBench(samples=300)


def _throughput(seconds: float, count: int) -> float:
    return round(count / seconds, 1) if seconds else float("inf")


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
    begun = time.perf_counter()
    one = math_verify_batch(items, workers=1)
    single = _throughput(time.perf_counter() - begun, len(items))
    begun = time.perf_counter()
    many = math_verify_batch(items, workers=bench.workers)
    parallel = _throughput(time.perf_counter() - begun, len(items))
    speedup = parallel / single
    cpus = os.cpu_count() or 1
    capacity = cpu_parallel_capacity(processes=bench.workers)
    notes = (", ".join(f"{name} {rate:,.0f}/s" for name, rate in rates.items())
             + f"; math_verify 1 worker {single:,.0f}/s, {bench.workers} workers {parallel:,.0f}/s"
             + f"; same grades: {one == many}; {len(items):,} outputs, {cpus} CPUs"
             + f"; a busy-loop calibration got {capacity}× from {bench.workers} processes now (the ceiling)")
    return BenchRow(ID, MEASUREMENT, parallel, single, round(speedup, 2), TARGET,
                    speedup >= MIN_PARALLEL_SPEEDUP and one == many, unit="samples/s (math-verify)",
                    notes=notes, seconds=round(time.perf_counter() - started, 1))
