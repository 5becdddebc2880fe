"""The registered model version is the checkpoint's own training run (a logged model of it), and MLflow
and Dagster link to each other: a checkpoint built by the same ``build_checkpoint`` as every training
asset (its build writes files instead of training), then the real ``instruct_candidate`` asset, against
a real MLflow server."""

import json

import dagster as dg
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_IS_EXTERNAL

from assets._training import build_checkpoint
from assets.promotion import instruct_candidate
from pipelines.definitions import default_resources
from pipelines.evaluation.scoring import DEFAULT_GRADER
from pipelines.registry import CHECKPOINT_ARTIFACT
from resources import CheckpointStore, MLflowTracking
from tests.conftest import reconfigured

DAGSTER_UI = "http://dagster.example:3000"
FINGERPRINT = "0123456789abcdef"
SUITES = ("in_distribution", "perturbed")


@dg.asset(name="instruct_checkpoint")
def checkpoint_built_like_the_trained_ones(context: dg.AssetExecutionContext, checkpoints: CheckpointStore,
                                           mlflow: MLflowTracking):
    def build(staging, run):
        (staging / "model.safetensors").write_bytes(b"weights")
        return []

    return build_checkpoint(context, "instruct_checkpoint", FINGERPRINT, {"lr": 0.1}, build, checkpoints, mlflow)


def _resources(tmp_path, mlflow_server):
    resources = default_resources(tmp_path / "home", profile="smoke", tracking_uri=mlflow_server)
    resources["mlflow"] = reconfigured(resources["mlflow"], registered_model_prefix="links-test",
                                       experiment_name="registry-links", ui_url=mlflow_server,
                                       dagster_ui_url=DAGSTER_UI)
    duckdb = resources["duckdb"]
    duckdb.replace_table("eval_suites", [{"suite": s, "problem_id": f"{s}-{i}", "question": "q", "answer": str(i)}
                                         for s in SUITES for i in range(2)])
    duckdb.replace_table("eval_scores", [{"variant": "instruct", "suite": s, "grader": DEFAULT_GRADER,
                                          "pass_at_1": 0.5, "model_version": FINGERPRINT} for s in SUITES])
    return resources


def test_the_version_is_a_logged_model_of_the_training_run_and_links_back_to_dagster(tmp_path, mlflow_server):
    resources = _resources(tmp_path, mlflow_server)
    instance = dg.DagsterInstance.ephemeral()
    trained = dg.materialize([checkpoint_built_like_the_trained_ones], resources=resources, instance=instance)
    training_run_id = trained.asset_materializations_for_node("instruct_checkpoint")[0].metadata["mlflow_run_id"].value
    result = dg.materialize([checkpoint_built_like_the_trained_ones, instruct_candidate], resources=resources,
                            instance=instance, selection=["instruct_candidate"])
    assert result.success
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("instruct_candidate")[0].metadata.items()}
    client = resources["mlflow"].client()
    version = client.get_model_version("links-test-instruct", metadata["model_version"])

    # the registered version is the training run, through a logged model of it that points at the checkpoint
    assert version.run_id == training_run_id and metadata["mlflow_run_id"] == training_run_id
    model_id = version.tags["model_id"]
    model = client.get_logged_model(model_id)
    assert version.source == model.artifact_location
    published = resources["checkpoints"].current("instruct_checkpoint")
    assert model.source_run_id == training_run_id and model.name == "instruct_checkpoint"
    assert model.tags[MLFLOW_MODEL_IS_EXTERNAL] == "true" and model.tags["checkpoint_uri"] == published.as_uri()
    training_run = client.get_run(training_run_id)
    assert [output.model_id for output in training_run.outputs.model_outputs] == [model_id]
    assert CHECKPOINT_ARTIFACT not in {a.path for a in client.list_artifacts(training_run_id)}  # no weight copy
    assert not resources["mlflow"].runs("tags.`dagster.asset_key` = 'instruct_candidate'")  # no empty run

    # MLflow -> Dagster: the training run and the version name the asset, its version and the runs, with links
    run_tags = training_run.data.tags
    assert run_tags["dagster.run_id"] == trained.run_id and run_tags["dagster.asset_key"] == "instruct_checkpoint"
    assert run_tags["dagster.run_url"] == f"{DAGSTER_UI}/runs/{trained.run_id}"
    assert run_tags["dagster.asset_url"] == f"{DAGSTER_UI}/assets/instruct_checkpoint"
    assert f"({DAGSTER_UI}/runs/{trained.run_id})" in run_tags["mlflow.note.content"]  # the run's description
    assert {key: version.tags[key] for key in ("dagster.asset_key", "dagster.data_version", "dagster.run_id",
                                               "dagster.run_url", "dagster.registered_by_run_id")} == {
        "dagster.asset_key": "instruct_checkpoint", "dagster.data_version": FINGERPRINT,
        "dagster.run_id": trained.run_id, "dagster.run_url": f"{DAGSTER_UI}/runs/{trained.run_id}",
        "dagster.registered_by_run_id": result.run_id}
    assert f"({DAGSTER_UI}/runs/{trained.run_id})" in version.description
    assert f"({DAGSTER_UI}/runs/{result.run_id})" in version.description

    # Dagster -> MLflow: the version, the logged model and the training run, in MLflow's ML view
    experiment_id = training_run.info.experiment_id
    assert metadata["mlflow_model_version"] == f"{mlflow_server}/#/models/links-test-instruct/versions/{version.version}"
    assert metadata["mlflow_run"] == (f"{mlflow_server}/#/experiments/{experiment_id}/runs/{training_run_id}"
                                      "?workflowType=machine_learning")
    assert metadata["mlflow_logged_model"].startswith(f"{mlflow_server}/#/experiments/{experiment_id}/models/{model_id}")
    assert metadata["newly_registered"] is True and json.loads(version.tags["scores"]) == {s: 0.5 for s in SUITES}

    again = dg.materialize([checkpoint_built_like_the_trained_ones, instruct_candidate], resources=resources,
                           instance=instance, selection=["instruct_candidate"])
    repeated = again.asset_materializations_for_node("instruct_candidate")[0].metadata
    assert repeated["model_version"].value == version.version and repeated["newly_registered"].value is False
    assert len(client.search_logged_models([experiment_id])) == 1
