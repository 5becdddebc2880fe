"""[evals] Generations per variant (stored once), grading + metrics, and the paper-style report.

Each output carries a content fingerprint (checkpoint, suites, decoding, code); re-materializing with
the same inputs reuses the stored rows instead of regenerating or re-grading.
"""

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from assets._automation import UPSTREAM_DATA_CHANGED
from assets._pools import ACCELERATOR
from assets._lineage import recorded
from assets._metadata import metadata_of_build, mlflow_metadata, preview, table
from assets.checkpoints import base_checkpoint, instruct_checkpoint
from assets.self_improvement import checkpoints_by_round, rounds_with_validation
from assets._tables import read_published
from assets.datasets import eval_suites, training_problems
from pipelines.evaluation.decoding import generate_samples, prompt_options, shot_settings
from pipelines.evaluation.gating import answer_types
from pipelines.evaluation.graders import item_tolerances
from pipelines.evaluation.prompts import BASE, INSTRUCT, REASONING, few_shot_exemplars, round_variant
from pipelines.evaluation.reporting import build_report, embed_png
from pipelines.evaluation.scoring import grade_generations, mark_primary, perturbation_drops, score
from pipelines.evaluation.summary import SUMMARY_COLUMNS, SUMMARY_TABLE, metric_points, summary_columns, summary_rows
from pipelines.evaluation.versioning import generation_fingerprint, scores_fingerprint, suites_fingerprint
from pipelines.lineage import content_fingerprint
from pipelines.profiles import with_overrides
from pipelines.promotion import record_published_scores
from pipelines.registry import published_model_name, published_version, register_published
from pipelines.training.base_model import model_content_version, resolve_base_model
from resources import CheckpointStore, DuckDBStore, LineageProfile, MLflowTracking

GENERATIONS_TABLE = "eval_generations"
SCORES_TABLE = "eval_scores"
PERTURBATION_TABLE = "eval_perturbation_drops"


def _stored_fingerprints(duckdb: DuckDBStore, table: str, column: str, where: str = "", parameters=()) -> set:
    if table not in duckdb.tables():
        return set()
    columns = {r["name"] for r in duckdb.query("SELECT column_name AS name FROM information_schema.columns "
                                                "WHERE table_name = ?", [table])}
    if column not in columns:
        return {None}
    return {r["f"] for r in duckdb.query(f'SELECT DISTINCT "{column}" AS f FROM "{table}" {where}', list(parameters))}


def _reused(context, what: str, fingerprint: str, metadata: dict) -> dg.MaterializeResult:
    context.log.info(f"{what}: inputs, config and code unchanged (fingerprint {fingerprint}); reusing stored rows")
    return dg.MaterializeResult(data_version=dg.DataVersion(fingerprint), metadata={
        **metadata_of_build(context, what, fingerprint), "reused": True, "fingerprint": fingerprint, **metadata})


class EvalChatConfig(dg.Config):
    """How a chat variant is asked; by default as its checkpoint was trained (its lineage.json)."""

    system_prompt: str | None = Field(default=None, description="Replaces the trained system prompt; "
                                      "\"\" asks without one. Unset: the checkpoint's own.")
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict, description="Merged over the "
                                                 "checkpoint's own, e.g. {enable_thinking: false}.")


class EvalConfig(dg.Config):
    """Decoding overrides for one variant; unset fields take the profile's per-variant defaults."""

    method: str | None = Field(default=None, description="cot | sample | greedy")
    samples: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0)
    max_new_tokens: int | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, gt=0)
    seed: int | None = None
    stop_strings: list[str] | None = Field(default=None, description="cut outputs at these strings")
    backend: str | None = Field(default=None, description="hf | vllm (vllm: sampling/greedy only, in its own "
                                "virtualenv: make vllm-env)")
    chat: EvalChatConfig = EvalChatConfig()
    few_shot: int | None = Field(default=None, ge=0, description="Worked exemplars from the training split "
                                 "(drawn with the decoding seed) before each question; 0: zero-shot.")
    compare_shots: list[int] = Field(default_factory=list, description="Exemplar counts evaluated too, beside "
                                     "few_shot, for the report's zero- vs few-shot table, e.g. [0] with "
                                     "few_shot 4; the main tables keep few_shot.")
    published_model: str | None = Field(default=None, description="Evaluate this model instead of the "
                                        "lineage's checkpoint, as this variant's row of the report (decoded as "
                                        "the paper prescribes for the kind): a local HF directory or a cached "
                                        "hub id, recorded by the SHA-256 of its files.")


def _model_under_test(config: EvalConfig, checkpoints: CheckpointStore, checkpoint_name: str,
                      variant: str) -> tuple[Path, str, list[dict]]:
    """(directory, version, audit sources): the lineage's checkpoint, or a published model by content."""
    if config.published_model is None:
        model_dir = checkpoints.current(checkpoint_name)
        return model_dir, model_dir.name, []
    model_dir = resolve_base_model(config.published_model, field=f"eval_{variant}.published_model")
    content = model_content_version(model_dir)
    return model_dir, published_version(content), [{"published_model": config.published_model,
                                                     "path": str(model_dir), "sha256": content}]


def build_eval_asset(variant: str, checkpoint: dg.AssetsDefinition) -> dg.AssetsDefinition:
    checkpoint_name = checkpoint.key.path[-1]

    @dg.asset(name=f"eval_{variant}", group_name="evals", deps=[checkpoint, eval_suites, training_problems],
              kinds={"pytorch", "duckdb", "mlflow"}, **ACCELERATOR,
              automation_condition=UPSTREAM_DATA_CHANGED, description=(
                  f"The {variant} checkpoint generating on every eval suite with its fair decoding; "
                  f"one stored row per sample (seed and decoding config recorded)."))
    def _eval(context: dg.AssetExecutionContext, config: EvalConfig, duckdb: DuckDBStore,
              checkpoints: CheckpointStore, mlflow: MLflowTracking, profile: LineageProfile) -> dg.MaterializeResult:
        decoding = with_overrides(profile.settings().eval.decoding_for(variant), config.model_dump())
        model_dir, model_version, sources = _model_under_test(config, checkpoints, checkpoint_name, variant)
        suites = duckdb.rows("eval_suites")
        chat = prompt_options(variant, model_dir)  # as the checkpoint was trained, unless overridden
        if variant != BASE:  # the base variant continues the corpus format: no chat template
            chat = chat.overridden(config.chat.system_prompt, config.chat.chat_template_kwargs)
        settings = shot_settings(decoding, config.compare_shots)
        training = read_published(context, duckdb, training_problems)[0] if any(s.few_shot for s in settings) else []
        exemplars = {s.few_shot: few_shot_exemplars(training, s.few_shot, s.seed) for s in settings}
        # the items as prompted: a suite's new rel_tol re-grades (eval_scores) without regenerating
        items = suites_fingerprint(suites, prompts_only=True)
        fingerprint = generation_fingerprint(variant, model_version, items, "||".join(
            s.describe() + (f"|shots:{content_fingerprint(exemplars[s.few_shot])}" if s.few_shot else "")
            for s in settings), chat.fingerprint_content())
        chat_metadata = {"chat_options": dg.MetadataValue.json(chat.record()), "model_version": model_version,
                         "published_model": config.published_model or ""}
        if _stored_fingerprints(duckdb, GENERATIONS_TABLE, "eval_fingerprint", "WHERE variant = ?", [variant]) \
                == {fingerprint}:
            return recorded(_reused(context, f"eval_{variant}", fingerprint, chat_metadata), config, sources=sources)
        with mlflow.start_run(run_name=f"eval_{variant}", tags=mlflow.dagster_tags(context)) as run:
            run.log_params({"variant": variant, "checkpoint": str(model_dir), **asdict(decoding),
                            "compare_shots": ",".join(str(s.few_shot) for s in settings[1:]),
                            **{f"chat.{key}": value for key, value in chat.record().items()}})
            rows = [{**row, "eval_fingerprint": fingerprint, "headline": setting is settings[0]}
                    for setting in settings
                    for row in generate_samples(variant, model_dir, suites, setting, model_version=model_version,
                                                chat=chat, exemplars=exemplars[setting.few_shot])]
            seconds = sum(r["seconds"] for r in rows)
            run.log_metrics({"samples": len(rows), "samples_per_second": len(rows) / seconds})
            run.log_text("\n".join(json.dumps(r, default=str) for r in rows), "samples.jsonl")
            if sources:  # a published model: its identity in the registry (eval_scores adds its scores)
                registered = register_published(
                    mlflow.registry(), published_model_name(mlflow.registered_model_prefix, variant),
                    model_ref=config.published_model, model_dir=model_dir, sha256=sources[0]["sha256"],
                    run_id=run.run_id, variant=variant, scores={}, suites_fingerprint=suites_fingerprint(suites),
                    tags=mlflow.dagster_tags(context))
                chat_metadata["mlflow_published_model_version"] = dg.MetadataValue.url(
                    mlflow.model_version_url(registered.name, registered.version))
        duckdb.replace_rows(GENERATIONS_TABLE, rows, "variant", variant)
        return recorded(dg.MaterializeResult(data_version=dg.DataVersion(fingerprint), metadata={
            "reused": False, "fingerprint": fingerprint,
            "dagster/row_count": len(rows), "decoding": dg.MetadataValue.json(asdict(decoding)),
            "few_shot_settings": dg.MetadataValue.json([s.few_shot for s in settings]),
            "generation_seconds": round(seconds, 2), "samples_per_second": round(len(rows) / seconds, 2),
            **chat_metadata, "samples": preview(rows, ["suite", "few_shot", "sample_index", "output", "gold"]),
            **mlflow_metadata(run),
        }), config, sources=sources)

    return _eval


eval_base = build_eval_asset(BASE, base_checkpoint)
eval_instruct = build_eval_asset(INSTRUCT, instruct_checkpoint)
# the reasoning branch round by round (round 0: reasoning_checkpoint); the last round is eval_reasoning
round_evals = [build_eval_asset(round_variant(index), checkpoint) for index, checkpoint in enumerate(checkpoints_by_round[:-1])]
eval_reasoning = build_eval_asset(REASONING, checkpoints_by_round[-1])


@dg.asset(group_name="evals", deps=[eval_base, eval_instruct, *round_evals, eval_reasoning],
          kinds={"duckdb", "mlflow"},
          automation_condition=UPSTREAM_DATA_CHANGED)
def eval_scores(context: dg.AssetExecutionContext, duckdb: DuckDBStore, mlflow: MLflowTracking,
                profile: LineageProfile) -> dg.MaterializeResult:
    """Every grader on the stored generations, then pass@1, pass@k, maj@k, token costs and the paired
    perturbation drops."""
    suite_rows = duckdb.rows("eval_suites")
    tolerances = item_tolerances(suite_rows)  # number suites' rel_tol, for the exact grader
    fingerprint = scores_fingerprint(_stored_fingerprints(duckdb, GENERATIONS_TABLE, "eval_fingerprint"), tolerances)
    if _stored_fingerprints(duckdb, SCORES_TABLE, "scores_fingerprint") == {fingerprint} \
            and PERTURBATION_TABLE in duckdb.tables():
        return recorded(_reused(context, "eval_scores", fingerprint, {}))
    generations = duckdb.rows(GENERATIONS_TABLE)
    graded = grade_generations(generations, workers=profile.settings().eval.grading_workers, tolerances=tolerances)
    scores = [{**row, "scores_fingerprint": fingerprint}
              for row in mark_primary(score(generations, graded), answer_types(suite_rows))]
    drops = perturbation_drops(generations, graded, suite_rows)
    duckdb.replace_table("eval_grades", graded)
    duckdb.replace_table(PERTURBATION_TABLE, drops, columns=["variant", "perturbation", "grader", "pairs",
                                                             "original_pass_at_1", "perturbed_pass_at_1", "drop"])
    duckdb.replace_table(SCORES_TABLE, scores)
    summary = summary_rows(scores)
    with mlflow.start_run(run_name="eval_scores", tags=mlflow.dagster_tags(context)) as run:
        run.log_metric_points(metric_points(scores))  # pass@k curves and in-distribution pass@1 headlines
        run.log_table(summary_columns(summary), SUMMARY_TABLE)  # the whole grid, as one table
    for variant, model_version in record_published_scores(mlflow.registry(), mlflow.registered_model_prefix,
                                                          scores, suite_rows):
        context.log.warning(f"{model_version} ({variant}) is not in the registry: re-materialize eval_{variant}")
    # each suite's primary grader (math-verify for LaTeX suites), each variant's configured few-shot setting
    main = [s for s in scores if s["primary"] and s["headline"]]
    return recorded(dg.MaterializeResult(data_version=dg.DataVersion(fingerprint), metadata={
        "reused": False, "fingerprint": fingerprint,
        "dagster/row_count": len(scores), "graded_samples": len(graded), "summary": table(summary, SUMMARY_COLUMNS),
        **{f"pass_at_1/{s['variant']}/{s['suite']}": s["pass_at_1"] for s in main},
        **mlflow_metadata(run),
    }))


@dg.asset(group_name="evals", deps=[eval_scores], kinds={"duckdb", "mlflow"},
          automation_condition=UPSTREAM_DATA_CHANGED)
def eval_report(context: dg.AssetExecutionContext, duckdb: DuckDBStore, checkpoints: CheckpointStore,
                mlflow: MLflowTracking) -> dg.MaterializeResult:
    """Markdown + HTML report with the paper's tables and plots; in Dagster and as MLflow artifacts.
    Published as a version named by the scores' fingerprint (with the self-improvement rounds' rows, when rounds
    ran), so unchanged scores reuse it."""
    scores = duckdb.rows(SCORES_TABLE)
    round_rows = rounds_with_validation(duckdb, checkpoints)
    # the report is a function of the scores table (one fingerprint) and of what the rounds sampled and kept
    fingerprint = scores[0]["scores_fingerprint"] if not round_rows else \
        content_fingerprint([scores[0]["scores_fingerprint"], round_rows])
    if checkpoints.has_current("eval_report") and checkpoints.current("eval_report").name == fingerprint:
        published = checkpoints.current("eval_report")
        return recorded(_reused(context, "eval_report", fingerprint, {
            "report": dg.MetadataValue.md((published / "report.md").read_text()),
            "report_html": dg.MetadataValue.path(str(published / "report.html"))}))
    report = build_report(scores, duckdb.rows(PERTURBATION_TABLE), round_rows)
    with checkpoints.publish("eval_report", version=fingerprint) as staging:
        (staging / "report.md").write_text(report.markdown)
        (staging / "report.html").write_text(report.html)
        for name, png in report.plots.items():
            (staging / name).write_bytes(png)
    published = checkpoints.current("eval_report")
    with mlflow.start_run(run_name="eval_report", tags=mlflow.dagster_tags(context)) as run:
        for path in sorted(published.iterdir()):
            run.log_artifact(path)
        if round_rows:  # the rounds as a table in MLflow too, beside the report's plot
            run.log_table({column: [row.get(column) for row in round_rows] for column in round_rows[0]},
                          "self_improvement_rounds.json")
    plots = "\n\n".join(embed_png(png, name) for name, png in report.plots.items())
    return recorded(dg.MaterializeResult(data_version=dg.DataVersion(fingerprint), metadata={
        "reused": False, "fingerprint": fingerprint,
        "report": dg.MetadataValue.md(report.markdown + "\n\n" + plots),
        "report_html": dg.MetadataValue.path(str(published / "report.html")),
        **mlflow_metadata(run),
    }))
