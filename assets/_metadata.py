"""Metadata helpers shared by the asset modules (previews, tables, MLflow links)."""

from collections.abc import Sequence

import dagster as dg

DATA_VERSION_TAG = "dagster/data_version"
PREVIEW_ROWS = 5
PREVIEW_CELL_CHARS = 80


def preview(rows: Sequence[dict], columns: Sequence[str]) -> dg.MetadataValue:
    """A few rows as a markdown table, cells shortened so the UI stays readable."""
    def cell(value) -> str:
        text = str(value).replace("\n", " ")
        text = text if len(text) <= PREVIEW_CELL_CHARS else text[: PREVIEW_CELL_CHARS - 1] + "…"
        # < and > as entities: the UI's markdown would take "<think>" for an HTML tag and hide it
        return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows[:PREVIEW_ROWS]]
    return dg.MetadataValue.md("\n".join(lines))


def table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> dg.MetadataValue:
    """Rows as a Dagster table ((name, type) columns): the UI shows it with a header, sortable."""
    records = [dg.TableRecord({name: row.get(name) for name, _ in columns}) for row in rows]
    return dg.MetadataValue.table(records=records,
                                  schema=dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in columns]))


_COLUMN_TYPES = {bool: "bool", int: "int", float: "float", str: "string"}


def column_schema(rows: Sequence[dict], columns: Sequence[str] | None = None) -> dg.TableSchema:
    """``dagster/column_schema`` of a table: its columns, typed by the first non-null value of each."""
    names = list(columns) if columns else list(rows[0]) if rows else []
    def kind(name: str) -> str:
        value = next((row.get(name) for row in rows if row.get(name) is not None), None)
        return _COLUMN_TYPES.get(type(value), "string")
    return dg.TableSchema(columns=[dg.TableColumn(name, kind(name)) for name in names])


def metadata_of_build(context: dg.AssetExecutionContext, asset: str, data_version: str, search: int = 200) -> dict:
    """The metadata of the materialization of ``asset`` that built ``data_version`` (not a reuse of it), so
    that a reused materialization shows the same figures, plots and MLflow link on its page. Empty when
    this Dagster instance never built it (e.g. the checkpoint came from another instance)."""
    for record in context.instance.fetch_materializations(dg.AssetKey(asset), limit=search).records:
        event = record.asset_materialization
        built = event is not None and event.tags.get(DATA_VERSION_TAG) == data_version \
            and getattr(event.metadata.get("reused"), "value", None) is False
        if built:
            return {name: value for name, value in event.metadata.items() if not name.startswith("lineage/")}
    return {}


def mlflow_metadata(run) -> dict:
    return {"mlflow_run_id": run.run_id, "mlflow_run": dg.MetadataValue.url(run.url)}
