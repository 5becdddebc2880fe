"""The scores as MLflow and Dagster draw them well: one summary table, pass@k curves, a few headlines.

Logged as 36 single values (variant x suite x grader), MLflow drew 36 one-bar charts. Instead the whole
grid is one table (``summary_rows``, logged with ``log_table`` and shown in Dagster as a table), pass@k
is a metric per variant and suite stepped by k (a curve), and only in-distribution pass@1 per variant
stays a scalar, the headline to compare runs by. Curves and headlines use each suite's primary grader
(``primary``, see ``scoring.mark_primary``); the table has every grader.
"""

from __future__ import annotations

import json

from pipelines.data.datasets import IN_DISTRIBUTION, SUITES
from pipelines.evaluation.prompts import variant_rank
from pipelines.evaluation.scoring import is_headline, is_primary

SUMMARY_TABLE = "eval_scores_summary.json"
# (column, type) of each summary row; the type as Dagster's TableColumn names it
SUMMARY_COLUMNS = (("variant", "string"), ("suite", "string"), ("grader", "string"), ("primary", "bool"),
                   ("decoding", "string"), ("few_shot", "int"), ("k", "int"), ("pass_at_1", "float"),
                   ("pass_at_k", "float"), ("maj_at_k", "float"), ("greedy_pass_at_1", "float"),
                   ("mean_output_tokens", "float"), ("mean_thinking_tokens", "float"))


def _rank(value: str, order) -> tuple[int, str]:
    return (order.index(value) if value in order else len(order), value)


def summary_rows(scores: list[dict]) -> list[dict]:
    """One row per variant, suite, few-shot setting and grader (the configured setting and the primary grader
    first), with the headline columns."""
    def key(row):
        return (variant_rank(row["variant"]), _rank(row["suite"], SUITES), not is_headline(row),
                row.get("few_shot") or 0, not is_primary(row), row["grader"])

    return [{column: _rounded(row.get(column)) for column, _ in SUMMARY_COLUMNS}
            | {"primary": is_primary(row), "few_shot": row.get("few_shot") or 0} for row in sorted(scores, key=key)]


def _rounded(value):
    return round(value, 4) if isinstance(value, float) else value


def summary_columns(rows: list[dict]) -> dict[str, list]:
    """The rows column by column, the shape ``MlflowClient.log_table`` takes."""
    return {column: [row[column] for row in rows] for column, _ in SUMMARY_COLUMNS}


def metric_points(scores: list[dict]) -> list[tuple[str, int, float]]:
    """(key, step, value) to log from the primary graders' rows: ``pass_at_k/<variant>/<suite>`` at steps
    k = 1..K, and the headline ``pass_at_1/<variant>`` (in-distribution) at step 0."""
    points = []
    for row in scores:
        if not is_primary(row) or not is_headline(row):  # each variant's configured few-shot setting
            continue
        curve = json.loads(row["pass_at_k_curve"])
        points += [(f"pass_at_k/{row['variant']}/{row['suite']}", k, value) for k, value in enumerate(curve, 1)]
        if row["suite"] == IN_DISTRIBUTION:
            points.append((f"pass_at_1/{row['variant']}", 0, row["pass_at_1"]))
    return points
