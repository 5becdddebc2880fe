"""[evals] Model registry and gated promotion of the instruct and reasoning checkpoints.

``<variant>_candidate`` registers the evaluated checkpoint in the MLflow model registry with its scores,
as a logged model of the MLflow run that trained it, linked back to the checkpoint asset; its blocking
check compares it with the ``champion`` alias on the same suites, each under its primary grader
(math-verify for LaTeX-answer suites, exact otherwise); ``<variant>_champion`` moves the alias, and runs
only when the check passed (a failed check stops it in the same run).
"""

import dagster as dg
from pydantic import Field

from assets._automation import UPSTREAM_DATA_CHANGED
from assets._lineage import recorded
from assets._tables import require_passed_on_latest
from assets.checkpoints import instruct_checkpoint
from assets.self_improvement import final_reasoning_checkpoint
from assets.evals import SCORES_TABLE, eval_scores
from pipelines.evaluation.gating import GateSettings, evaluate_checkpoint
from pipelines.evaluation.prompts import INSTRUCT, REASONING
from pipelines.promotion import check_candidate, promote_candidate, register_candidate
from pipelines.registry import registered_model_name
from pipelines.training.checkpoint_record import read_record
from resources import CheckpointStore, DuckDBStore, LineageProfile, MLflowTracking
from resources.checkpoint_store import verify_checkpoint


class GateConfig(dg.Config):
    tolerance: float | None = Field(default=None, description="largest accepted pass@1 drop on any suite "
                                    "(default: the profile's gate_tolerance)")


def build_promotion(variant: str, checkpoint: dg.AssetsDefinition) -> list:
    checkpoint_name = checkpoint.key.path[-1]

    @dg.asset(name=f"{variant}_candidate", group_name="evals", deps=[checkpoint, eval_scores], kinds={"mlflow"},
              automation_condition=UPSTREAM_DATA_CHANGED, description=(
                  f"The current {variant} checkpoint as a version in the MLflow model registry, with its scores."))
    def _candidate(context: dg.AssetExecutionContext, duckdb: DuckDBStore, checkpoints: CheckpointStore,
                   mlflow: MLflowTracking) -> dg.MaterializeResult:
        name = registered_model_name(mlflow.registered_model_prefix, variant)
        registry, checkpoint_dir = mlflow.registry(), checkpoints.current(checkpoint_name)
        newly_registered = registry.find(name, checkpoint_dir.name) is None
        tags, description = mlflow.model_version_links(context, checkpoint_name, checkpoint_dir.name,
                                                       read_record(checkpoint_dir).get("dagster_run_id"))

        def stand_in_run():  # only for a checkpoint whose training run is not in this tracking store
            return mlflow.start_run(run_name=f"{variant}_candidate", tags=mlflow.dagster_tags(context))

        version = register_candidate(registry, name, variant, checkpoint_dir, duckdb.rows(SCORES_TABLE),
                                     duckdb.rows("eval_suites"), stand_in_run, tags, description,
                                     model_name=checkpoint_name)
        experiment_id = registry.experiment_of(version.run_id)
        links = {"mlflow_model_version": dg.MetadataValue.url(mlflow.model_version_url(name, version.version)),
                 "mlflow_run_id": version.run_id,
                 "mlflow_run": dg.MetadataValue.url(mlflow.run_url(experiment_id, version.run_id))}
        if version.model_id:
            links["mlflow_logged_model"] = dg.MetadataValue.url(mlflow.logged_model_url(experiment_id,
                                                                                        version.model_id))
        return recorded(dg.MaterializeResult(
            data_version=dg.DataVersion(f"{name}/{version.version}"), metadata={
                "registered_model": name, "model_version": version.version, "model_uri": version.uri,
                "checkpoint_version": version.checkpoint_version, "suites_fingerprint": version.suites_fingerprint,
                "scores": dg.MetadataValue.json(version.scores),
                "graders": dg.MetadataValue.json(version.graders or {}), "newly_registered": newly_registered,
                **links}))

    @dg.asset_check(asset=_candidate, name="no_regression_vs_champion", blocking=True,
                    description="Same suites, per-suite pass@1 (under the suite's primary grader) within "
                                "tolerance of the champion's.")
    def _gate(config: GateConfig, duckdb: DuckDBStore, checkpoints: CheckpointStore, mlflow: MLflowTracking,
              profile: LineageProfile) -> dg.AssetCheckResult:
        settings = profile.settings().eval
        gate_settings = GateSettings(tolerance=settings.gate_tolerance if config.tolerance is None else config.tolerance)
        suites = duckdb.rows("eval_suites")

        def evaluate(model_dir, model_version):  # only when the champion was scored on other suites/graders
            verify_checkpoint(model_dir, checkpoint_name)  # the published files, unchanged since
            return evaluate_checkpoint(variant, model_dir, suites, settings.decoding_for(variant), model_version,
                                       settings.grading_workers)

        outcome = check_candidate(mlflow.registry(), registered_model_name(mlflow.registered_model_prefix, variant),
                                  checkpoints.current(checkpoint_name), suites, gate_settings, evaluate)
        return dg.AssetCheckResult(
            passed=outcome.verdict.passed, severity=dg.AssetCheckSeverity.ERROR, metadata={
                "verdict": dg.MetadataValue.md(outcome.verdict.markdown()), "tolerance": gate_settings.tolerance,
                "candidate_version": outcome.candidate.version,
                "champion_version": outcome.champion.version if outcome.champion else "none",
                "champion_reevaluated": outcome.champion_reevaluated,
                "graders": dg.MetadataValue.json(outcome.verdict.graders),  # the grader each suite was gated on
                "candidate_scores": dg.MetadataValue.json(outcome.candidate.scores),
                "champion_scores": dg.MetadataValue.json(outcome.champion.scores if outcome.champion else {}),
            })

    @dg.asset(name=f"{variant}_champion", group_name="evals", deps=[_candidate], kinds={"mlflow"},
              automation_condition=UPSTREAM_DATA_CHANGED, description=(
                  f"Moves the {variant} 'champion' alias to the candidate that passed the no-regression gate."))
    def _champion(context: dg.AssetExecutionContext, mlflow: MLflowTracking,
                  checkpoints: CheckpointStore) -> dg.MaterializeResult:
        # In the same run a failed gate already stops this step; a later run selecting only it must not
        # move the alias to a candidate the gate rejected (or never judged) either.
        require_passed_on_latest(context, _candidate.key, [_gate.check_key])
        champion, previous = promote_candidate(mlflow.registry(),
                                               registered_model_name(mlflow.registered_model_prefix, variant),
                                               checkpoints.current(checkpoint_name))
        return recorded(dg.MaterializeResult(
            data_version=dg.DataVersion(f"{champion.name}/{champion.version}"), metadata={
                "registered_model": champion.name, "champion_version": champion.version, "model_uri": champion.uri,
                "champion_alias_uri": f"models:/{champion.name}@champion",
                "previous_champion": previous.version if previous else "none",
                "checkpoint_version": champion.checkpoint_version}))

    return [_candidate, _gate, _champion]


instruct_candidate, instruct_no_regression, instruct_champion = build_promotion(INSTRUCT, instruct_checkpoint)
# the final reasoning model: the last self-improvement round (reasoning_checkpoint when rounds are off)
reasoning_candidate, reasoning_no_regression, reasoning_champion = build_promotion(REASONING,
                                                                                 final_reasoning_checkpoint)
