"""P8, P9: a user's conversational SFT file through ``raw_training_data``'s work, vs ``datasets`` + DuckDB.

Input: a seeded JSONL file of ``{"messages": [...]}`` rows (a system prompt in some, several turns in
some), their text made of GSM8K question and answer sentences so lengths and characters are realistic,
sized so 1M rows make a file of at least 1 GiB. Ours: ``ingest_training_data`` (every record read,
hashed, normalised, deduplicated, streamed to parquet) then ``publish_tables`` into a fresh DuckDB
file, as the asset runs them. Baseline: what a user would do without the lineage,
``datasets.load_dataset("json", ...)`` then the Arrow table into DuckDB. Each side runs in its own
child process, one after the other; wall time is the work after the imports. Peak RSS: the child's
process tree (ours forks converter workers) sampled every 0.2 s, summed (shared pages counted in
each process: an upper bound), and at least the child's own ``ru_maxrss`` from ``wait4``. P8 is the
time (≤ 60 s for 1M rows), P9 the peak RSS (< 2 GiB for a 1 GiB file); their ratios are ours ÷ the
baseline's. Everything lives in one temporary directory (~4 GiB at most: the file, one side's parquet
or ``datasets`` cache and DuckDB file), deleted at the end.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.data import gsm8k_rows
from benchmarks.harness import BenchRow
from benchmarks.p4_p5_p7_demo import RssSampler

PROJECT_ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30
MAX_SECONDS = 60.0
MAX_RSS_GIB = 2.0
TIME_ROW = ("P8", "ingest 1M conversational rows (s)", "≤ 60 s")
RSS_ROW = ("P9", "peak RSS ingesting 1 GB JSONL (GiB)", "< 2 GiB")
SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "You are a patient math tutor. Explain each step before giving the final answer.",
    "You are a concise assistant. Answer in as few sentences as the question allows, and show the arithmetic.",
    "Tu es un assistant serviable. Réponds en détaillant ton raisonnement, étape par étape.",
)
_CALCULATOR = re.compile(r"<<[^>]*>>")
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")


@dataclass(frozen=True)
class IngestBench:
    rows: int = 1_000_000
    system_share: float = 0.3  # rows with a system prompt
    multi_turn_share: float = 0.35  # rows with 2-3 user turns before the trained answer
    answer_sentences: tuple[int, int] = (4, 10)  # per assistant turn (GSM8K solution lines are short)
    min_file_bytes: int = GIB  # P9 counts only on a file this large (1M rows of these make 1.16 GiB)
    seed: int = 0


QUICK = IngestBench(rows=20_000, min_file_bytes=0)


def sentence_pools() -> tuple[list[str], list[str]]:
    """(question sentences, answer sentences) of GSM8K train, calculator annotations removed."""
    questions, answers = [], []
    for row in gsm8k_rows("train"):
        questions += [s for s in _SENTENCE_END.split(row["question"].strip()) if s]
        solution = _CALCULATOR.sub("", row["answer"].split("####")[0])
        answers += [line.strip() for line in solution.splitlines() if line.strip()]
    return questions, answers


def write_conversations(path: Path, bench: IngestBench) -> int:
    """Write ``bench.rows`` conversations to ``path``; returns the file's size in bytes."""
    rng = random.Random(bench.seed)
    questions, answers = sentence_pools()
    low, high = bench.answer_sentences
    choices, randint, rand = rng.choices, rng.randint, rng.random

    def turn_pair() -> list[dict]:
        return [{"role": "user", "content": " ".join(choices(questions, k=randint(2, 5)))},
                {"role": "assistant", "content": "\n".join(choices(answers, k=randint(low, high)))}]

    with path.open("w", encoding="utf-8") as handle:
        lines = []
        for _ in range(bench.rows):
            messages = turn_pair()
            if rand() < bench.multi_turn_share:
                messages = [message for _ in range(randint(2, 3)) for message in turn_pair()]
            if rand() < bench.system_share:
                messages.insert(0, {"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
            lines.append(json.dumps({"messages": messages}, ensure_ascii=False))
            if len(lines) == 10_000:
                handle.write("\n".join(lines) + "\n")
                lines = []
        if lines:
            handle.write("\n".join(lines) + "\n")
    return path.stat().st_size


def ours(jsonl: Path, scratch: Path) -> dict:
    """The asset's work: ingest to parquet, publish the parquet into a fresh DuckDB file."""
    from assets._tables import publish_tables
    from pipelines.data.user_data import QUARANTINE_COLUMNS, TrainingSource, ingest_training_data
    from resources import DuckDBStore

    started = time.perf_counter()
    result = ingest_training_data([TrainingSource(str(jsonl))], scratch / "rows.parquet")
    ingested = time.perf_counter() - started
    duckdb = DuckDBStore(path=str(scratch / "ours.duckdb"), keep_open_s=0)
    publish_tables(duckdb, "raw_training_data", result.version, "bench", {
        "raw_training_data": result.rows_file, "raw_training_quarantine": (result.quarantined, QUARANTINE_COLUMNS)})
    seconds = time.perf_counter() - started
    with duckdb.connect() as connection:
        table_rows = connection.execute("SELECT count(*) FROM raw_training_data").fetchone()[0]
    return {"seconds": seconds, "ingest_seconds": ingested, "records": result.records,
            "kept": sum(result.kept.values()), "quarantined": len(result.quarantined), "table_rows": table_rows}


def baseline(jsonl: Path, scratch: Path) -> dict:
    """What a user would do without the lineage: ``datasets`` loads the file, DuckDB takes its Arrow table."""
    import datasets
    import duckdb

    datasets.disable_progress_bars()
    started = time.perf_counter()
    loaded = datasets.load_dataset("json", data_files=str(jsonl), split="train", cache_dir=str(scratch / "hf"))
    connection = duckdb.connect(str(scratch / "baseline.duckdb"))
    connection.register("incoming", loaded.data.table)
    connection.execute("CREATE OR REPLACE TABLE raw_training_data AS SELECT * FROM incoming")
    table_rows = connection.execute("SELECT count(*) FROM raw_training_data").fetchone()[0]
    connection.close()
    return {"seconds": time.perf_counter() - started, "records": loaded.num_rows, "table_rows": table_rows}


SIDES = {"ours": ours, "baseline": baseline}


def measure(side: str, jsonl: Path, scratch: Path) -> dict:
    """Run one side in a child process: its report plus the peak RSS (bytes) of its process tree."""
    work = scratch / side
    work.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "benchmarks.p8_ingest", side, str(jsonl), str(work)],
                               cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE)
    with RssSampler(process.pid, interval_s=0.2) as sampler:
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    shutil.rmtree(work, ignore_errors=True)
    if process.returncode != 0:
        raise RuntimeError(f"{side} side exited with {process.returncode}")
    report = json.loads(output.decode().strip().splitlines()[-1])
    own = usage.ru_maxrss * 1024  # Linux: KiB
    return {**report, "peak_rss": max(own, sampler.tree_peak), "own_peak_rss": own,
            "processes": len(sampler.peaks)}


def run(quick: bool = False) -> list[BenchRow]:
    bench = QUICK if quick else IngestBench()
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-p8-") as scratch_dir:
        scratch = Path(scratch_dir)
        jsonl = scratch / "conversations.jsonl"
        generated = time.perf_counter()
        size = write_conversations(jsonl, bench)
        generated = time.perf_counter() - generated
        mine, theirs = measure("ours", jsonl, scratch), measure("baseline", jsonl, scratch)
    seconds = round(time.perf_counter() - started, 1)
    load_after = os.getloadavg()[0]
    agree = mine["table_rows"] == mine["kept"] and theirs["table_rows"] == bench.rows
    common = (f"{bench.rows:,} rows, {size / GIB:.2f} GiB file (generated in {generated:.0f}s); "
              f"kept {mine['kept']:,}, quarantined {mine['quarantined']:,}; tables complete: {agree}; "
              f"load average {load_before:.2f} before, {load_after:.2f} after, on {os.cpu_count()} cores")
    time_notes = (f"ours {mine['seconds']:.1f}s (ingest to parquet {mine['ingest_seconds']:.1f}s, publish into "
                  f"DuckDB {mine['seconds'] - mine['ingest_seconds']:.1f}s) vs datasets.load_dataset + DuckDB "
                  f"{theirs['seconds']:.1f}s; " + common)
    ours_gib, theirs_gib = mine["peak_rss"] / GIB, theirs["peak_rss"] / GIB
    rss_notes = (f"ours {ours_gib:.2f} GiB ({mine['processes']} processes summed; the step process alone "
                 f"{mine['own_peak_rss'] / GIB:.2f}) vs datasets.load_dataset + DuckDB {theirs_gib:.2f} GiB; "
                 + common)
    return [
        BenchRow(*TIME_ROW[:2], round(mine["seconds"], 1), round(theirs["seconds"], 1),
                 round(mine["seconds"] / theirs["seconds"], 2), TIME_ROW[2],
                 mine["seconds"] <= MAX_SECONDS and agree, unit="s", notes=time_notes, seconds=seconds),
        BenchRow(*RSS_ROW[:2], round(ours_gib, 2), round(theirs_gib, 2), round(ours_gib / theirs_gib, 2),
                 RSS_ROW[2], ours_gib < MAX_RSS_GIB and agree and size >= bench.min_file_bytes, unit="GiB",
                 notes=rss_notes, seconds=seconds),
    ]


if __name__ == "__main__":  # a child: python -m benchmarks.p8_ingest ours|baseline FILE SCRATCH
    report = SIDES[sys.argv[1]](Path(sys.argv[2]), Path(sys.argv[3]))
    print(json.dumps(report))
