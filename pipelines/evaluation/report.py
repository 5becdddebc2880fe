"""The comparison table every retrain produces: variants × suites, accuracy and tokens spent."""

from __future__ import annotations

from pipelines.data.datasets import SUITES
from pipelines.evaluation.prompts import VARIANTS


def comparison_markdown(summary: list[dict]) -> str:
    """Markdown table: one row per variant, an accuracy and a mean-token column per suite."""
    present = {row["suite"] for row in summary}
    suites = [s for s in SUITES if s in present] + sorted(present - set(SUITES))
    cells = {(row["variant"], row["suite"]): row for row in summary}
    variants = [v for v in VARIANTS if any(row["variant"] == v for row in summary)]
    header = "| variant | " + " | ".join(f"{s} acc | {s} tokens" for s in suites) + " |"
    rule = "|---|" + "---:|---:|" * len(suites)
    lines = [header, rule]
    for variant in variants:
        values = []
        for suite in suites:
            row = cells.get((variant, suite))
            values += [f"{row['accuracy']:.3f}", f"{row['mean_output_tokens']:.1f}"] if row else ["–", "–"]
        lines.append(f"| {variant} | " + " | ".join(values) + " |")
    n = {row["suite"]: row["n"] for row in summary}
    lines.append("")
    lines.append("Items per suite: " + ", ".join(f"{s}={n[s]}" for s in suites) + ". Greedy decoding, "
                 "exact numeric match on the final answer.")
    return "\n".join(lines)
