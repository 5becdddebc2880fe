"""The report's self-improvement section: the reasoning branch round by round.

Accuracy per round per suite comes from the scores of the branch's variants (round 0 = ``reasoning_checkpoint``,
the rounds, the final ``reasoning``); what each round sampled and kept, the verifier's
yield, the length trend and the validation figures that drive early stopping come from the round rows.
"""

from __future__ import annotations

from pipelines.data.datasets import IN_DISTRIBUTION, SUITES
from pipelines.evaluation.prompts import REASONING, round_variant

SECTION = "Self-improvement rounds"
PLOT = "self_improvement_rounds.png"
ROUND_TABLE_COLUMNS = ("round", "sampled", "kept", "yield", "pairs", "mean_output_tokens", "mean_thinking_tokens",
                       "validation_before", "validation_after", "stopped")


def branch_variants(rounds: int) -> list[tuple[str, str]]:
    """(label, variant) of the reasoning branch in order: round 0 (reasoning_checkpoint) … round R (the final)."""
    return [(f"round {k}", round_variant(k)) for k in range(rounds)] + [
        (f"round {rounds} (final)" if rounds else "round 0 (final)", REASONING)]


def rounds_section(main: dict, round_rows: list[dict], table) -> tuple[list[str], dict[str, bytes]]:
    """Markdown lines and the plot; ``main``: the headline primary score per (variant, suite); ``table``: the
    report's Markdown table writer. Nothing when no round ran."""
    if not round_rows:
        return [], {}
    rows = sorted(round_rows, key=lambda r: r["round"])
    branch = [(label, variant) for label, variant in branch_variants(len(rows)) if (variant, IN_DISTRIBUTION) in main]
    suites = [s for s in SUITES if any((v, s) in main for _, v in branch)]
    md = [f"## {SECTION}", "", "Each round samples the previous round's checkpoint on new training prompts, keeps what "
          "the verifier accepts (final answer and arithmetic steps), and tunes that checkpoint on it. Accuracy is the "
          "reasoning variant's decoding on every suite (pass@1 / pass@k / maj@k):", ""]
    md += table(["checkpoint"] + [f"{s} {m}" for s in suites for m in ("pass@1", "pass@k", "maj@k")],
                [[label] + [main[(v, s)][key] if (v, s) in main else float("nan")
                            for s in suites for key in ("pass_at_1", "pass_at_k", "maj_at_k")]
                 for label, v in branch]) + [""]
    md += ["What each round sampled and kept (yield = kept / sampled), its mean output and thinking tokens, and the "
           "held-out validation pass@1 before and after it trained (the early-stopping signal):", ""]
    md += table(list(ROUND_TABLE_COLUMNS),
                [[r["round"], r["sampled"], r["kept"], r["yield"], r["pairs"], r["mean_output_tokens"],
                  r["mean_thinking_tokens"], _number(r.get("validation_before")), _number(r.get("validation_after")),
                  r["stop_reason"] if r["stopped"] else "no"] for r in rows]) + [""]
    return md, {PLOT: _plot(main, branch, suites, rows)}


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def _plot(main: dict, branch: list[tuple[str, str]], suites: list[str], rows: list[dict]) -> bytes:
    """Left: pass@1 per suite by round, with the verifier's yield of the round that trained it. Right: the answer
    length and thinking-token trend (in-distribution means of each round's eval samples)."""
    from pipelines.evaluation.reporting import new_figure, png_bytes

    plt, figure, (accuracy, tokens) = new_figure(columns=2)
    positions = list(range(len(branch)))
    labels = [label for label, _ in branch]
    for suite in suites:
        accuracy.plot(positions, [main[(v, suite)]["pass_at_1"] if (v, suite) in main else float("nan")
                                  for _, v in branch], marker="o", label=f"{suite} pass@1")
    yields = {r["round"]: r["yield"] for r in rows}  # round k's samples (of round k-1) trained round k
    accuracy.bar([k for k in yields if k < len(branch)], [yields[k] for k in yields if k < len(branch)], width=0.3,
                 alpha=0.3, color="gray", label="verifier yield (kept / sampled)")
    accuracy.set_xticks(positions, labels, rotation=15)
    accuracy.set_ylim(0, 1)
    accuracy.set_ylabel("pass@1 / yield")
    accuracy.legend(fontsize=7)
    for key, label in (("mean_output_tokens", "output tokens"), ("mean_thinking_tokens", "thinking tokens"),
                       ("mean_answer_tokens", "answer tokens")):
        tokens.plot(positions, [main[(v, IN_DISTRIBUTION)].get(key, float("nan")) for _, v in branch], marker="o",
                    label=label)
    tokens.set_xticks(positions, labels, rotation=15)
    tokens.set_ylabel("mean tokens (in-distribution)")
    tokens.legend(fontsize=7)
    return png_bytes(plt, figure)
