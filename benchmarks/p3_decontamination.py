"""P3: decontamination of 1M training rows against 10k eval items, our n-gram index vs plain Python.

Eval items: every GSM8K question (train + test, 8,792) topped up with domain-shift template questions.
Training rows: template questions (other templates than the eval ones) with a share of eval items
planted in them, verbatim or disguised (case, whitespace, punctuation), so there is something to find.
The Python baseline runs on a slice of the training rows and is extrapolated linearly when the slice
is smaller than the whole (its cost is linear in training rows once the eval index is built). Both run
in interleaved rounds and the best round of each counts: the first call in a process also pays for
fresh memory pages, which on this shared VM is a large and variable share of a one-second job.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from benchmarks.data import disguise, gsm8k_rows, template_texts
from benchmarks.harness import BenchRow, timed
from pipelines.data.decontamination import DEFAULT_NGRAM_SIZE, find_contamination, normalized_words, python_matches

ID, MEASUREMENT, TARGET = "P3", "decontamination 1M train × 10k eval (s)", "≤ 60 s and ≥ 10×"
MAX_SECONDS = 60.0
MIN_SPEEDUP = 10.0


@dataclass(frozen=True)
class DecontaminationBench:
    train_rows: int = 1_000_000
    eval_items: int = 10_000
    planted_fraction: float = 0.001  # training rows that carry an eval item
    baseline_rows: int = 100_000  # the Python baseline's slice (extrapolated to train_rows)
    naive_rows: int = 200  # the naive all-pairs version's slice, for context in the notes
    repeats: int = 2  # interleaved ours/baseline rounds; the best of each counts
    ngram_size: int = DEFAULT_NGRAM_SIZE
    max_operand: int = 100
    seed: int = 0


QUICK = DecontaminationBench(train_rows=20_000, eval_items=1_000, baseline_rows=20_000, naive_rows=50, repeats=1)


def build_inputs(bench: DecontaminationBench) -> tuple[list[tuple[str, str]], list[tuple[str, str]], int]:
    rng = random.Random(bench.seed)
    questions = [row["question"] for row in gsm8k_rows("train") + gsm8k_rows("test")][:bench.eval_items]
    questions += template_texts(bench.eval_items - len(questions), bench.seed, bench.max_operand, domain_shift=True)
    eval_items = [(f"eval-{i}", text) for i, text in enumerate(questions)]
    texts = template_texts(bench.train_rows, bench.seed + 1, bench.max_operand)
    planted = int(bench.train_rows * bench.planted_fraction)
    for slot in rng.sample(range(bench.train_rows), planted):
        copied = rng.choice(questions)
        texts[slot] = f"{texts[slot]} {disguise(copied, rng) if rng.random() < 0.5 else copied}"
    return [(f"train-{i}", text) for i, text in enumerate(texts)], eval_items, planted


def naive_pairs(train_rows: list[tuple[str, str]], eval_items: list[tuple[str, str]], n: int) -> set:
    """The naive version: every training row's n-gram set intersected with every eval item's."""
    def grams(text: str) -> set[tuple[str, ...]]:
        words = normalized_words(text)
        return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}

    eval_sets = [(eval_id, grams(text)) for eval_id, text in eval_items]
    return {(train_id, eval_id) for train_id, text in train_rows
            for eval_id, eval_grams in eval_sets if grams(text) & eval_grams}


def run(quick: bool = False) -> BenchRow:
    bench = QUICK if quick else DecontaminationBench()
    started = time.perf_counter()
    train, evals, planted = build_inputs(bench)
    baseline_slice = train[:bench.baseline_rows]
    ours_rounds, baseline_rounds = [], []
    for _ in range(bench.repeats):
        seconds, matches = timed(find_contamination, train, evals, bench.ngram_size)
        ours_rounds.append(seconds)
        seconds, baseline_matches = timed(python_matches, baseline_slice, evals, bench.ngram_size)
        baseline_rounds.append(seconds)
    ours, baseline_measured = min(ours_rounds), min(baseline_rounds)
    baseline = baseline_measured * len(train) / len(baseline_slice)
    naive_seconds, _ = timed(naive_pairs, train[:bench.naive_rows], evals, bench.ngram_size)
    naive = naive_seconds * len(train) / bench.naive_rows
    slice_ids = {row_id for row_id, _ in baseline_slice}
    agree = ({(m.train_id, m.eval_id) for m in matches if m.train_id in slice_ids}
             == {(m.train_id, m.eval_id) for m in baseline_matches})
    flagged = len({m.train_id for m in matches})
    speedup = baseline / ours
    notes = (f"ours {ours:.2f}s (rounds {', '.join(f'{t:.2f}' for t in ours_rounds)}); Python index baseline "
             f"{baseline_measured:.1f}s on {len(baseline_slice):,} rows (best of {bench.repeats})"
             + (f", ×{len(train) / len(baseline_slice):.0f} extrapolated" if len(baseline_slice) < len(train) else "")
             + f"; naive all-pairs Python ≈{naive:,.0f}s (from {bench.naive_rows} rows, {naive / ours:,.0f}× ours)"
             + f"; n={bench.ngram_size}; {planted:,} planted, {flagged:,} rows flagged; results agree: {agree}")
    return BenchRow(ID, MEASUREMENT, round(ours, 2), round(baseline, 2), round(speedup, 2), TARGET,
                    ours <= MAX_SECONDS and speedup >= MIN_SPEEDUP and agree, unit="s", notes=notes,
                    seconds=round(time.perf_counter() - started, 1))
