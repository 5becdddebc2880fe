"""Evaluate one variant on every suite: build prompts, generate in batches, grade, summarize."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pipelines.evaluation.generation import generate, load_for_generation
from pipelines.evaluation.grading import extract_final_answer, is_correct
from pipelines.evaluation.prompts import build_prompt
from pipelines.profiles import EvalSettings


@dataclass
class VariantEvaluation:
    samples: list[dict]
    summary: list[dict]
    seconds: float


def evaluate_variant(variant: str, model_dir: Path, suite_rows: list[dict], settings: EvalSettings,
                     model_version: str) -> VariantEvaluation:
    model, tokenizer = load_for_generation(model_dir)
    prompts = [build_prompt(variant, row["question"], tokenizer) for row in suite_rows]
    run = generate(model, tokenizer, prompts, settings.max_new_tokens, settings.batch_size)
    samples = []
    for row, prompt, generation in zip(suite_rows, prompts, run.generations):
        predicted = extract_final_answer(generation.text)
        samples.append({
            "variant": variant, "model_version": model_version, "suite": row["suite"],
            "problem_id": row["problem_id"], "prompt": prompt, "output": generation.text,
            "output_tokens": generation.output_tokens, "predicted": predicted, "gold": row["answer"],
            "correct": is_correct(predicted, row["answer"]),
        })
    return VariantEvaluation(samples, summarize(samples), run.seconds)


def summarize(samples: list[dict]) -> list[dict]:
    """Accuracy and mean output tokens per (variant, suite)."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for sample in samples:
        groups[(sample["variant"], sample["suite"])].append(sample)
    return [{"variant": variant, "suite": suite, "n": len(rows),
             "accuracy": sum(r["correct"] for r in rows) / len(rows),
             "mean_output_tokens": sum(r["output_tokens"] for r in rows) / len(rows)}
            for (variant, suite), rows in sorted(groups.items())]
