"""Do the self-improvement rounds beat seed noise? ``python -m benchmarks.self_improvement_seeds <lineage home>``.

An accuracy measurement, not a speed benchmark (not part of ``make bench``): after ``make demo``, it runs the
tiny profile's rounds again from the demo's ``reasoning_checkpoint`` once per seed, with the project's own
round code (prompt split, sampling, verifier, think-SFT recipe), and scores think-SFT, round 0 and every round
on the held-out in-distribution suite as ``eval_reasoning`` does (thinking-mode sampling, pass@1 over the
samples, the exact grader). The seed drives the round's sampling, its training and the eval's sampling, so the
spread across seeds is the noise the rounds' gain has to exceed. Writes a Markdown table to
``benchmarks/results/self_improvement_seeds.md`` and prints it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import duckdb

from benchmarks.harness import RESULTS_DIR
from pipelines.data.datasets import IN_DISTRIBUTION
from pipelines.data.self_improvement import (generate, label_samples, round_prompts, round_statistics, split_prompts,
                                             training_rows)
from pipelines.evaluation.decoding import generate_here
from pipelines.evaluation.grading import extract_final_answer, is_correct
from pipelines.evaluation.prompts import REASONING
from pipelines.profiles import TINY
from pipelines.training.checkpoint_record import recorded_chat_options
from pipelines.training.recipes import sft


def _rows(database: Path, sql: str) -> list[dict]:
    with duckdb.connect(str(database), read_only=True) as connection:
        cursor = connection.execute(sql)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def pass_at_1(model_dir: Path, items: list[dict], seed: int) -> float:
    """In-distribution pass@1 with the reasoning variant's decoding (samples at its temperature, this seed)."""
    decoding = replace(TINY.eval.decoding_for(REASONING), seed=seed)
    rows = generate_here(REASONING, model_dir, items, decoding, "seeds", recorded_chat_options(model_dir))
    return sum(is_correct(extract_final_answer(r["output"]), r["gold"]) for r in rows) / len(rows)


def run_seed(home: Path, seed: int, work: Path) -> dict:
    database = home / "lineage.duckdb"
    settings = TINY.self_improvement
    think = _rows(database, "SELECT * FROM think_dataset WHERE answer IS NOT NULL ORDER BY problem_id")
    items = _rows(database, f"SELECT * FROM eval_suites WHERE suite = '{IN_DISTRIBUTION}'")
    _, pool = split_prompts(think, settings.validation_prompts, TINY.data.seed)
    model = (home / "checkpoints" / "reasoning_checkpoint" / "current").resolve()
    figures = {"seed": seed, "think_sft": pass_at_1((home / "checkpoints" / "think_sft_checkpoint" / "current")
                                                    .resolve(), items, seed), "round 0": pass_at_1(model, items, seed)}
    for index in range(1, settings.rounds + 1):
        started = time.perf_counter()
        prompts = round_prompts(pool, index, settings.prompts)
        outputs = generate(model, prompts, settings.samples_per_prompt, settings.temperature, settings.max_new_tokens,
                           TINY.eval.batch_size, seed * 1000 + index)
        records = label_samples(index, prompts, outputs, model.name, settings.agreement)
        output = work / f"seed{seed}_round{index}"
        sft(model, training_rows(records), replace(settings.sft, seed=seed), output)
        model = output
        figures[f"round {index}"] = pass_at_1(model, items, seed)
        figures[f"round {index} yield"] = round_statistics(records)["yield"]
        figures[f"round {index} seconds"] = time.perf_counter() - started
    return figures


def table(results: list[dict], rounds: int) -> str:
    columns = ["think_sft", "round 0"] + [f"round {k}" for k in range(1, rounds + 1)]
    lines = ["| seed | " + " | ".join(columns) + " | final − think-SFT |", "|---" * (len(columns) + 2) + "|"]
    for r in results:
        lines.append(f"| {r['seed']} | " + " | ".join(f"{r[c]:.3f}" for c in columns)
                     + f" | {r[columns[-1]] - r['think_sft']:+.3f} |")
    for name, reduce in (("mean", statistics.mean), ("std", statistics.stdev)):
        lines.append(f"| {name} | " + " | ".join(f"{reduce([r[c] for r in results]):.3f}" for c in columns)
                     + f" | {reduce([r[columns[-1]] - r['think_sft'] for r in results]):.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("home", type=Path, help="the lineage home a `make demo` filled (LINEAGE_HOME, default var/)")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as work:
        results = [run_seed(args.home, seed, Path(work)) for seed in seeds]
    text = table(results, TINY.self_improvement.rounds)
    yields = ", ".join(f"seed {r['seed']}: " + " / ".join(f"{r[f'round {k} yield']:.2f}"
                                                           for k in range(1, TINY.self_improvement.rounds + 1))
                       for r in results)
    report = (f"# Self-improvement rounds over seeds\n\nIn-distribution pass@1 (reasoning decoding), tiny profile, "
              f"{len(seeds)} seeds.\n\n{text}\n\nVerifier yield per round: {yields}\n")
    (RESULTS_DIR / "self_improvement_seeds.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
