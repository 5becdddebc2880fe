"""[evals] Each variant evaluated on every suite, and the comparison report across variants."""

import dagster as dg

from assets._metadata import mlflow_metadata, preview
from assets.checkpoints import base_checkpoint, instruct_checkpoint, reasoning_checkpoint
from assets.datasets import eval_suites
from pipelines.evaluation.prompts import BASE, INSTRUCT, REASONING
from pipelines.evaluation.report import comparison_markdown
from pipelines.evaluation.run import evaluate_variant, summarize
from pipelines.profiles import with_overrides
from resources import CheckpointStore, DuckDBStore, LineageProfile, MLflowTracking

SAMPLES_TABLE = "eval_samples"


class EvalConfig(dg.Config):
    max_new_tokens: int | None = None
    batch_size: int | None = None


def build_eval_asset(variant: str, checkpoint: dg.AssetsDefinition) -> dg.AssetsDefinition:
    checkpoint_name = checkpoint.key.path[-1]

    @dg.asset(name=f"eval_{variant}", group_name="evals", deps=[checkpoint, eval_suites],
              kinds={"pytorch", "duckdb", "mlflow"})
    def _eval(context: dg.AssetExecutionContext, config: EvalConfig, duckdb: DuckDBStore,
              checkpoints: CheckpointStore, mlflow: MLflowTracking, profile: LineageProfile) -> dg.MaterializeResult:
        settings = with_overrides(profile.settings().eval, config.model_dump())
        model_dir = checkpoints.current(checkpoint_name)
        suites = duckdb.rows("eval_suites")
        with mlflow.start_run(run_name=f"eval_{variant}", tags=mlflow.dagster_tags(context)) as run:
            run.log_params({"variant": variant, "checkpoint": str(model_dir), "decoding": "greedy",
                            "max_new_tokens": settings.max_new_tokens, "batch_size": settings.batch_size})
            result = evaluate_variant(variant, model_dir, suites, settings, model_version=model_dir.name)
            run.log_metrics({f"{row['suite']}/accuracy": row["accuracy"] for row in result.summary}
                            | {f"{row['suite']}/mean_output_tokens": row["mean_output_tokens"]
                               for row in result.summary}
                            | {"samples_per_second": len(result.samples) / result.seconds})
            run.log_text(comparison_markdown(result.summary), "summary.md")
        duckdb.replace_rows(SAMPLES_TABLE, result.samples, "variant", variant)
        return dg.MaterializeResult(metadata={
            "dagster/row_count": len(result.samples),
            **{f"accuracy/{row['suite']}": row["accuracy"] for row in result.summary},
            **{f"mean_output_tokens/{row['suite']}": row["mean_output_tokens"] for row in result.summary},
            "generation_seconds": round(result.seconds, 2),
            "summary": dg.MetadataValue.md(comparison_markdown(result.summary)),
            "samples": preview(result.samples, ["suite", "output", "predicted", "gold", "correct"]),
            **mlflow_metadata(run),
        })

    _eval.__doc__ = f"The {variant} checkpoint generating on every eval suite, graded by exact answer."
    return _eval


eval_base = build_eval_asset(BASE, base_checkpoint)
eval_instruct = build_eval_asset(INSTRUCT, instruct_checkpoint)
eval_reasoning = build_eval_asset(REASONING, reasoning_checkpoint)


@dg.asset(group_name="evals", deps=[eval_base, eval_instruct, eval_reasoning], kinds={"duckdb", "mlflow"})
def eval_report(context: dg.AssetExecutionContext, duckdb: DuckDBStore, mlflow: MLflowTracking) -> dg.MaterializeResult:
    """Variants × suites comparison (accuracy, mean output tokens) from the stored per-sample outputs."""
    summary = summarize(duckdb.rows(SAMPLES_TABLE))
    table = comparison_markdown(summary)
    duckdb.replace_table("eval_summary", summary)
    with mlflow.start_run(run_name="eval_report", tags=mlflow.dagster_tags(context)) as run:
        run.log_metrics({f"{r['variant']}/{r['suite']}/accuracy": r["accuracy"] for r in summary})
        run.log_text(table, "comparison.md")
    return dg.MaterializeResult(metadata={
        "comparison": dg.MetadataValue.md(table), "variants": len({r["variant"] for r in summary}),
        "suites": len({r["suite"] for r in summary}), **mlflow_metadata(run),
    })
