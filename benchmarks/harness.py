"""Shared pieces of the benchmarks: one result row per measurement, the table, JSON + Markdown output.

Every benchmark measures its baseline and the project's way in the same run (same machine, same
load), so the ratio is what is reported and compared with the target.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class BenchRow:
    """One measurement. ``ours``/``baseline`` carry their unit in ``unit``; ``met`` is None when the
    row has no pass/fail target (report-only) or was not run."""

    id: str
    measurement: str
    ours: float | None
    baseline: float | None
    ratio: float | None
    target: str
    met: bool | None
    unit: str = ""
    notes: str = ""
    seconds: float = 0.0  # wall time the benchmark itself took

    @classmethod
    def not_run(cls, id: str, measurement: str, target: str, reason: str) -> BenchRow:
        return cls(id, measurement, None, None, None, target, None, notes=f"not run: {reason}")


@dataclass
class BenchReport:
    rows: list[BenchRow] = field(default_factory=list)
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    machine: dict = field(default_factory=lambda: machine_description())
    mode: str = "full"


def machine_description() -> dict:
    import os

    import psutil

    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "load_average_1m": round(os.getloadavg()[0], 2)}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def timed(function: Callable, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - started, result


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _met(row: BenchRow) -> str:
    return {True: "yes", False: "NO", None: "—"}[row.met]


TABLE_COLUMNS = ("id", "measurement", "ours", "baseline", "unit", "ratio", "target", "met", "notes")


def _cells(row: BenchRow) -> list[str]:
    return [row.id, row.measurement, _fmt(row.ours), _fmt(row.baseline), row.unit,
            _fmt(row.ratio) + ("×" if row.ratio is not None else ""), row.target, _met(row), row.notes]


def markdown_table(report: BenchReport) -> str:
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in _cells(row)) + " |" for row in report.rows]
    return "\n".join(lines)


def text_table(report: BenchReport, notes_width: int = 70) -> str:
    """A plain fixed-width table for the terminal (notes truncated; the files keep them whole)."""
    rows = [list(TABLE_COLUMNS)] + [_cells(row) for row in report.rows]
    for row in rows:
        row[-1] = row[-1] if len(row[-1]) <= notes_width else row[-1][:notes_width - 1] + "…"
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    rendered = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    rendered.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(rendered)


def write_results(report: BenchReport, directory: Path = RESULTS_DIR, stem: str = "latest") -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / f"{stem}.json", directory / f"{stem}.md"
    json_path.write_text(json.dumps(asdict(report), indent=2) + "\n")
    header = (f"# Benchmarks ({report.mode} run, {report.started})\n\n"
              f"Machine: {report.machine}\n\nRatios compare ours and the baseline measured in the same run.\n\n")
    md_path.write_text(header + markdown_table(report) + "\n")
    return json_path, md_path


def _spin(iterations: int) -> int:
    total = 0
    for i in range(iterations):
        total += i * i
    return total


def cpu_parallel_capacity(iterations: int = 3_000_000, processes: int = 2) -> float:
    """How many cores' worth of throughput ``processes`` busy processes get right now (ideal: processes).

    Shared machines give less; a parallel-speedup target cannot be met above this number."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=processes) as pool:
        list(pool.map(_spin, [1000] * processes))  # workers started before timing
        alone, _ = timed(lambda: list(pool.map(_spin, [iterations])))
        together, _ = timed(lambda: list(pool.map(_spin, [iterations] * processes)))
    return round(processes * alone / together, 2)
