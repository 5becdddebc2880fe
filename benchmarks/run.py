"""``python -m benchmarks.run [--only P2,P3] [--quick]``: run the benchmarks, print the table, write results.

``--quick`` shrinks every measurement to seconds (the smoke profile, small inputs): for checking that
the harness works, not for the numbers. Results go to ``benchmarks/results/latest.{json,md}`` (or
``--stem``). A benchmark that raises becomes a row saying so; the command then exits non-zero.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

from benchmarks import p1_training, p2_generation, p3_decontamination, p4_p5_p7_demo, p6_grading, p8_ingest
from benchmarks.harness import RESULTS_DIR, BenchReport, BenchRow, text_table, write_results

# id -> (module, rows it produces), in the order they run; the demo module measures P4, P5 and P7 in
# one pair of runs, the ingest module P8 and P9 in one. The demo pair runs last: right after it (its
# process tree ending, its homes being deleted) a 2-process throughput measurement found only ~1.6 of
# the 2 cores free.
BENCHMARKS = {
    "P1": (p1_training, ["P1"]),
    "P2": (p2_generation, ["P2"]),
    "P3": (p3_decontamination, ["P3"]),
    "P6": (p6_grading, ["P6"]),
    "P8": (p8_ingest, ["P8", "P9"]),
    "P4": (p4_p5_p7_demo, ["P4", "P5", "P7"]),
}
ALIASES = {"P5": "P4", "P7": "P4", "P9": "P8"}
ALL_IDS = ("P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9")


def selected(only: str | None) -> list[str]:
    if not only:
        return list(BENCHMARKS)
    wanted = [part.strip().upper() for part in only.split(",") if part.strip()]
    unknown = [w for w in wanted if w not in ALL_IDS]
    if unknown:
        raise SystemExit(f"unknown benchmark id(s) {unknown}; known: {', '.join(ALL_IDS)}")
    return list(dict.fromkeys(ALIASES.get(w, w) for w in wanted))


def run_benchmarks(ids: list[str], quick: bool, log=print, checkpoint=None) -> BenchReport:
    """Run ``ids`` in order; ``checkpoint(report)`` after each, so an interrupted run leaves its rows."""
    report = BenchReport(mode="quick" if quick else "full")
    for bench_id in ids:
        module, produces = BENCHMARKS[bench_id]
        log(f"[bench] {bench_id} ({', '.join(produces)}) ...")
        started = time.perf_counter()
        try:
            result = module.run(quick=quick)
        except Exception as error:  # noqa: BLE001 - one failing benchmark must not hide the others' rows
            traceback.print_exc()
            result = [BenchRow(row_id, "(failed)", None, None, None, "", False,
                               notes=f"failed: {type(error).__name__}: {error}"[:300]) for row_id in produces]
        rows = result if isinstance(result, list) else [result]
        report.rows.extend(rows)
        log(f"[bench] {bench_id} done in {time.perf_counter() - started:.0f}s")
        if checkpoint is not None:
            checkpoint(report)
    report.rows.sort(key=lambda row: row.id)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated ids, e.g. P2,P3 (P5 and P7 run with P4, P9 with P8)")
    parser.add_argument("--quick", action="store_true", help="tiny inputs and the smoke profile: checks the harness")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--stem", default="latest", help="results file name without extension")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    report = run_benchmarks(selected(args.only), args.quick,
                            checkpoint=lambda partial: write_results(partial, args.results_dir, args.stem))
    json_path, md_path = write_results(report, args.results_dir, args.stem)
    print("\n" + text_table(report))
    print(f"\n{len(report.rows)} rows in {time.perf_counter() - started:.0f}s; written to {json_path} and {md_path}")
    failed = [row.id for row in report.rows if row.notes.startswith("failed:")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
