"""Metadata helpers shared by the asset modules (previews, MLflow links)."""

from collections.abc import Sequence

import dagster as dg

PREVIEW_ROWS = 5
PREVIEW_CELL_CHARS = 80


def preview(rows: Sequence[dict], columns: Sequence[str]) -> dg.MetadataValue:
    """A few rows as a markdown table, cells shortened so the UI stays readable."""
    def cell(value) -> str:
        text = str(value).replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= PREVIEW_CELL_CHARS else text[: PREVIEW_CELL_CHARS - 1] + "…"

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows[:PREVIEW_ROWS]]
    return dg.MetadataValue.md("\n".join(lines))


def mlflow_metadata(run) -> dict:
    return {"mlflow_run_id": run.run_id, "mlflow_run": dg.MetadataValue.url(run.url)}
