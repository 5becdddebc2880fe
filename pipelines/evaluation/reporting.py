"""The paper-style evaluation report: tables (Markdown + HTML) and plots, from the scores table.

Sections: variant comparison with gaps to base, zero- vs few-shot, perturbation drop, domain-shift gap, grader
dependence, tokens vs accuracy, pass@k curves.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass

from pipelines.data.datasets import DOMAIN_SHIFT, IN_DISTRIBUTION, PERTURBED, SUITES
from pipelines.evaluation.graders import DESCRIPTIONS
from pipelines.evaluation.prompts import BASE, ordered_variants, variant_rank
from pipelines.evaluation.rounds_report import rounds_section
from pipelines.evaluation.scoring import is_headline, is_primary

SECTIONS = ("Variant comparison", "Zero-shot vs few-shot", "Perturbation drop", "Domain-shift gap",
            "Grader dependence", "Tokens vs accuracy", "pass@k")


@dataclass
class Report:
    markdown: str
    html: str
    plots: dict[str, bytes]


def _table(header: list[str], rows: list[list]) -> list[str]:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]


def _ordered(values: set[str], order) -> list[str]:
    return [v for v in order if v in values] + sorted(values - set(order))


def build_report(scores: list[dict], perturbation_drops: list[dict] = (), round_rows: list[dict] = ()) -> Report:
    """``round_rows``: one per self-improvement round (``self_improvement_rounds`` with the validation figures)."""
    comparison = [s for s in scores if is_primary(s)]  # every few-shot setting, for the zero- vs few-shot table
    scores = [s for s in scores if is_headline(s)]  # each variant's configured setting: the main tables
    main = {(s["variant"], s["suite"]): s for s in scores if is_primary(s)}
    variants = ordered_variants(v for v, _ in main)
    suites = _ordered({s for _, s in main}, SUITES)
    acc = lambda v, s: main[(v, s)]["pass_at_1"] if (v, s) in main else float("nan")  # noqa: E731
    primary = {s: main[(v, s)]["grader"] for v, s in main}
    md = ["# Evaluation report", "", "Primary grader per suite (the main tables): "
          + ", ".join(f"{s} = `{primary[s]}`" for s in suites) + ". Decoding per variant: "
          + ", ".join(f"{v} = {main[(v, suites[0])]['decoding']} (k={main[(v, suites[0])]['k']}, "
                      f"{main[(v, suites[0])].get('few_shot') or 0}-shot)" for v in variants), ""]

    md += ["## Variant comparison (pass@1, gap to base)", ""]
    rows = [[v] + [x for s in suites for x in (acc(v, s), acc(v, s) - acc(BASE, s))] for v in variants]
    md += _table(["variant"] + [h for s in suites for h in (f"{s} pass@1", "Δ vs base")], rows) + [""]
    cot = [v for v in variants if main[(v, suites[0])]["decoding"] == "cot"]
    if cot:
        md += ["CoT-decoded variants, confidence-selected path vs plain greedy decoding (pass@1):", ""]
        md += _table(["variant"] + [h for s in suites for h in (f"{s} CoT", f"{s} greedy")],
                     [[v] + [x for s in suites for x in (acc(v, s), main[(v, s)]["greedy_pass_at_1"])] for v in cot])
        md += [""]

    md += _few_shot_section(comparison, variants, suites)

    md += ["## Perturbation drop (in-distribution − perturbed)", ""]
    md += _table(["variant", "in_distribution", "perturbed", "drop"],
                 [[v, acc(v, IN_DISTRIBUTION), acc(v, PERTURBED), acc(v, IN_DISTRIBUTION) - acc(v, PERTURBED)]
                  for v in variants]) + [""]
    if perturbation_drops:
        md += ["Paired by kind (each twin against its own original, so item difficulty cancels out):", ""]
        md += _table(["variant", "perturbation", "pairs", "original", "perturbed", "drop"],
                     [[d["variant"], d["perturbation"], d["pairs"], d["original_pass_at_1"],
                       d["perturbed_pass_at_1"], d["drop"]]
                      for d in sorted(perturbation_drops, key=lambda d: (variant_rank(d["variant"]), d["perturbation"]))])
        md += [""]

    md += ["## Domain-shift gap (in-distribution − domain shift)", ""]
    md += _table(["variant", "in_distribution", "domain_shift", "gap"],
                 [[v, acc(v, IN_DISTRIBUTION), acc(v, DOMAIN_SHIFT), acc(v, IN_DISTRIBUTION) - acc(v, DOMAIN_SHIFT)]
                  for v in variants]) + [""]

    graders = sorted({s["grader"] for s in scores})
    by_grader = {(s["variant"], s["grader"]): s["pass_at_1"] for s in scores if s["suite"] == IN_DISTRIBUTION}
    md += ["## Grader dependence (in-distribution pass@1)", ""]
    md += [f"- `{g}`: {DESCRIPTIONS[g]}" for g in graders if g in DESCRIPTIONS] + [""]  # what each column means
    md += _table(["variant"] + graders + ["max − min"],
                 [[v] + [by_grader.get((v, g), float("nan")) for g in graders]
                  + [max(by_grader.get((v, g), 0) for g in graders) - min(by_grader.get((v, g), 0) for g in graders)]
                  for v in variants]) + [""]

    md += ["## Tokens vs accuracy (in-distribution)", ""]
    md += _table(["variant", "pass@1", "pass@k", "maj@k", "output tokens", "thinking tokens", "answer tokens",
                  "samples/s"],
                 [[v] + [main[(v, IN_DISTRIBUTION)][key] for key in ("pass_at_1", "pass_at_k", "maj_at_k",
                  "mean_output_tokens", "mean_thinking_tokens", "mean_answer_tokens", "samples_per_second")]
                  for v in variants if (v, IN_DISTRIBUTION) in main]) + [""]

    md += ["## pass@k", ""]
    md += _table(["variant", "suite", "k", "pass@1", "pass@k", "maj@k"],
                 [[v, s, main[(v, s)]["k"], main[(v, s)]["pass_at_1"], main[(v, s)]["pass_at_k"],
                   main[(v, s)]["maj_at_k"]] for v in variants for s in suites if (v, s) in main]) + [""]

    rounds_md, rounds_plot = rounds_section(main, list(round_rows), _table)
    md += rounds_md

    plots = {"accuracy_by_variant_suite.png": _accuracy_plot(variants, suites, acc),
             "pass_at_k_curves.png": _pass_at_k_plot(main, variants),
             "tokens_vs_accuracy.png": _tokens_plot(main, variants, suites), **rounds_plot}
    markdown = "\n".join(md)
    return Report(markdown, _html(markdown, plots), plots)


def _few_shot_section(primary_rows: list[dict], variants: list[str], suites: list[str]) -> list[str]:
    """pass@1 per exemplar count, side by side: what the paper's few-shot CoT prompting changed."""
    md = ["## Zero-shot vs few-shot (pass@1)", ""]
    by_shots = {(s["variant"], s["suite"], s.get("few_shot") or 0): s["pass_at_1"] for s in primary_rows}
    counts = sorted({n for _, _, n in by_shots})
    if len(counts) < 2:
        return md + [f"Every variant was evaluated {counts[0] if counts else 0}-shot only: set `compare_shots` "
                     "(e.g. `few_shot: 4, compare_shots: [0]`) on an eval asset for this comparison.", ""]
    rows = [[v, s] + [by_shots.get((v, s, n), float("nan")) for n in counts] for v in variants for s in suites
            if sum((v, s, n) in by_shots for n in counts) > 1]
    return md + _table(["variant", "suite"] + [f"{n}-shot" for n in counts], rows) + [""]


def embed_png(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def new_figure(columns: int = 1):
    """(pyplot, figure, axis or axes) on the Agg backend: the steps run without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(1, columns, figsize=(6 * columns, 3.4), dpi=100)


def png_bytes(plt, figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def _accuracy_plot(variants, suites, acc) -> bytes:
    plt, figure, axis = new_figure()
    width = 0.8 / max(1, len(variants))
    for i, variant in enumerate(variants):
        axis.bar([j + i * width for j in range(len(suites))], [acc(variant, s) for s in suites], width, label=variant)
    axis.set_xticks([j + width * (len(variants) - 1) / 2 for j in range(len(suites))], suites)
    axis.set_ylabel("pass@1")
    axis.set_ylim(0, 1)
    axis.legend()
    return png_bytes(plt, figure)


def _pass_at_k_plot(main, variants) -> bytes:
    plt, figure, axis = new_figure()
    for variant in variants:
        if (variant, IN_DISTRIBUTION) in main:
            curve = json.loads(main[(variant, IN_DISTRIBUTION)]["pass_at_k_curve"])
            axis.plot(range(1, len(curve) + 1), curve, marker="o", label=variant)
    axis.set_xlabel("k")
    axis.set_ylabel("pass@k (in-distribution)")
    axis.set_ylim(0, 1)
    axis.legend()
    return png_bytes(plt, figure)


def _tokens_plot(main, variants, suites) -> bytes:
    plt, figure, axis = new_figure()
    for variant in variants:
        points = [(main[(variant, s)]["mean_output_tokens"], main[(variant, s)]["pass_at_1"])
                  for s in suites if (variant, s) in main]
        axis.scatter([x for x, _ in points], [y for _, y in points], label=variant)
    axis.set_xlabel("mean output tokens")
    axis.set_ylabel("pass@1")
    axis.set_ylim(0, 1)
    axis.legend()
    return png_bytes(plt, figure)


def _html(markdown: str, plots: dict[str, bytes]) -> str:
    """A self-contained HTML page: headings, real tables and the plots inline."""
    body, table = [], []

    def flush_table() -> None:
        if table:
            header, *rows = [[html.escape(c.strip()) for c in line.strip("|").split("|")] for line in table
                             if not set(line) <= set("|-: ")]
            body.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in header) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
                        + "</table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush_table()
    body += [f'<h2>{html.escape(name)}</h2><img alt="{html.escape(name)}" '
             f'src="data:image/png;base64,{base64.b64encode(png).decode()}">' for name, png in plots.items()]
    style = "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>llm-lineage evaluation</title>"
            f"<style>{style}</style></head><body>" + "\n".join(body) + "</body></html>")
