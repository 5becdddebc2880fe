"""[evals] Model registry and gated promotion of the instruct and reasoning checkpoints.

``<variant>_candidate`` registers the evaluated checkpoint in the MLflow model registry with its scores;
its blocking check compares it with the ``champion`` alias on the same suites; ``<variant>_champion``
moves the alias, and runs only when the check passed (a failed check stops it in the same run).
"""

import dagster as dg
from pydantic import Field

from assets._automation import UPSTREAM_DATA_CHANGED
from assets._lineage import recorded
from assets._tables import require_passed_on_latest
from assets.checkpoints import instruct_checkpoint, reasoning_checkpoint
from assets.evals import SCORES_TABLE, eval_scores
from pipelines.evaluation.gating import GateSettings, evaluate_checkpoint
from pipelines.evaluation.prompts import INSTRUCT, REASONING
from pipelines.promotion import check_candidate, promote_candidate, register_candidate
from pipelines.registry import registered_model_name
from resources import CheckpointStore, DuckDBStore, LineageProfile, MLflowTracking


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
        runs = []

        def open_run():
            runs.append(mlflow.start_run(run_name=f"{variant}_candidate", tags=mlflow.dagster_tags(context)))
            return runs[-1]

        version = register_candidate(mlflow.registry(), name, variant, checkpoints.current(checkpoint_name),
                                     duckdb.rows(SCORES_TABLE), duckdb.rows("eval_suites"),
                                     GateSettings().grader, open_run)
        return recorded(context, duckdb, dg.MaterializeResult(
            data_version=dg.DataVersion(f"{name}/{version.version}"), metadata={
                "registered_model": name, "model_version": version.version, "model_uri": version.uri,
                "checkpoint_version": version.checkpoint_version, "suites_fingerprint": version.suites_fingerprint,
                "scores": dg.MetadataValue.json(version.scores), "newly_registered": bool(runs)}))

    @dg.asset_check(asset=_candidate, name="no_regression_vs_champion", blocking=True,
                    description="Same suites, per-suite pass@1 within tolerance of the champion's.")
    def _gate(config: GateConfig, duckdb: DuckDBStore, checkpoints: CheckpointStore, mlflow: MLflowTracking,
              profile: LineageProfile) -> dg.AssetCheckResult:
        settings = profile.settings().eval
        gate_settings = GateSettings(tolerance=settings.gate_tolerance if config.tolerance is None else config.tolerance)
        suites = duckdb.rows("eval_suites")

        def evaluate(model_dir, model_version):  # only when the champion was scored on other suites
            return evaluate_checkpoint(variant, model_dir, suites, settings.decoding_for(variant), model_version,
                                       gate_settings.grader, settings.grading_workers)

        outcome = check_candidate(mlflow.registry(), registered_model_name(mlflow.registered_model_prefix, variant),
                                  checkpoints.current(checkpoint_name), suites, gate_settings, evaluate)
        return dg.AssetCheckResult(
            passed=outcome.verdict.passed, severity=dg.AssetCheckSeverity.ERROR, metadata={
                "verdict": dg.MetadataValue.md(outcome.verdict.markdown()), "tolerance": gate_settings.tolerance,
                "candidate_version": outcome.candidate.version,
                "champion_version": outcome.champion.version if outcome.champion else "none",
                "champion_reevaluated": outcome.champion_reevaluated,
                "candidate_scores": dg.MetadataValue.json(outcome.candidate.scores),
                "champion_scores": dg.MetadataValue.json(outcome.champion.scores if outcome.champion else {}),
            })

    @dg.asset(name=f"{variant}_champion", group_name="evals", deps=[_candidate], kinds={"mlflow"},
              automation_condition=UPSTREAM_DATA_CHANGED, description=(
                  f"Moves the {variant} 'champion' alias to the candidate that passed the no-regression gate."))
    def _champion(context: dg.AssetExecutionContext, duckdb: DuckDBStore, mlflow: MLflowTracking,
                  checkpoints: CheckpointStore) -> dg.MaterializeResult:
        # In the same run a failed gate already stops this step; a later run selecting only it must not
        # move the alias to a candidate the gate rejected (or never judged) either.
        require_passed_on_latest(context, _candidate.key, [_gate.check_key])
        champion, previous = promote_candidate(mlflow.registry(),
                                               registered_model_name(mlflow.registered_model_prefix, variant),
                                               checkpoints.current(checkpoint_name))
        return recorded(context, duckdb, dg.MaterializeResult(
            data_version=dg.DataVersion(f"{champion.name}/{champion.version}"), metadata={
                "registered_model": champion.name, "champion_version": champion.version, "model_uri": champion.uri,
                "champion_alias_uri": f"models:/{champion.name}@champion",
                "previous_champion": previous.version if previous else "none",
                "checkpoint_version": champion.checkpoint_version}))

    return [_candidate, _gate, _champion]


instruct_candidate, instruct_no_regression, instruct_champion = build_promotion(INSTRUCT, instruct_checkpoint)
reasoning_candidate, reasoning_no_regression, reasoning_champion = build_promotion(REASONING, reasoning_checkpoint)
