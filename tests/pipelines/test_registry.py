"""Published models in the MLflow registry (issue #17): a model evaluated with ``eval_<variant>.published_model``
becomes a version of its own registered model, an external logged model of the evaluation run, named by content."""

import pytest
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_IS_EXTERNAL

from pipelines.registry import (CHECKPOINT_ARTIFACT, PUBLISHED_TAG, SHA256_TAG, published_model_name,
                                published_version, register_published)
from pipelines.training.base_model import model_content_version
from resources import MLflowTracking
from tests.fixtures.hf_models import save_qwen3_base

SCORES, GRADERS = {"in_distribution": 0.25, "math500": 0.1}, {"in_distribution": "exact", "math500": "math_verify"}


def test_a_published_model_is_registered_once_per_content_with_its_identity(tmp_path):
    tracking = MLflowTracking(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "a"))
    registry, client = tracking.registry(), tracking.client()
    name = published_model_name("llm-lineage", "base")
    assert name == "llm-lineage-published-base"
    model_dir = save_qwen3_base(tmp_path / "qwen3-base")
    sha256 = model_content_version(model_dir)
    with tracking.start_run("eval_base") as run:
        pass

    first = register_published(registry, name, "Org/Qwen3-Base", model_dir, sha256, run.run_id, "base", SCORES,
                               "suites-1", GRADERS, tags={"dagster/run_id": "abc"})
    assert first.checkpoint_version == published_version(sha256) == f"published-{sha256[:16]}"
    assert {k: first.tags[k] for k in (PUBLISHED_TAG, SHA256_TAG, "variant", "checkpoint_version", "dagster/run_id")} \
        == {PUBLISHED_TAG: "Org/Qwen3-Base", SHA256_TAG: sha256, "variant": "base",
            "checkpoint_version": f"published-{sha256[:16]}", "dagster/run_id": "abc"}
    assert first.scores == SCORES and first.graders == GRADERS and first.suites_fingerprint == "suites-1"
    assert first.run_id == run.run_id and first.model_id is not None
    logged = client.get_logged_model(first.model_id)  # external: points at the directory, weights not copied
    assert logged.source_run_id == run.run_id and logged.tags[SHA256_TAG] == sha256
    assert logged.tags[MLFLOW_MODEL_IS_EXTERNAL] == "true"
    assert registry.checkpoint_files(first, tmp_path / "scratch") == model_dir
    assert not client.list_artifacts(run.run_id, CHECKPOINT_ARTIFACT)
    assert "Published models" in client.get_registered_model(name).description

    # the same content again (another evaluation run, new scores): the same version, its scores updated
    with tracking.start_run("eval_base") as again_run:
        pass
    again = register_published(registry, name, "Org/Qwen3-Base", model_dir, sha256, again_run.run_id, "base",
                               {"in_distribution": 0.3, "math500": 0.1}, "suites-2", GRADERS)
    assert again.version == first.version and again.run_id == run.run_id
    assert again.scores["in_distribution"] == 0.3 and again.suites_fingerprint == "suites-2"
    assert len(client.search_model_versions(f"name = '{name}'")) == 1

    # other weights (a new upload under the same reference): a new version
    changed = save_qwen3_base(tmp_path / "qwen3-base-v2", seed=1)
    changed_sha = model_content_version(changed)
    assert changed_sha != sha256
    second = register_published(registry, name, "Org/Qwen3-Base", changed, changed_sha, run.run_id, "base", SCORES,
                                "suites-2", GRADERS)
    assert second.version != first.version and second.tags[SHA256_TAG] == changed_sha
    assert second.checkpoint_version == f"published-{changed_sha[:16]}"
    assert registry.find(name, f"published-{sha256[:16]}").version == first.version
    assert registry.champion(name) is None  # published models are recorded, never promoted

    # the same files evaluated as another variant from the same run: its own model, version and logged model
    other = register_published(registry, published_model_name("llm-lineage", "instruct"), "Org/Qwen3-Base", model_dir,
                               sha256, run.run_id, "instruct", SCORES, "suites-2", GRADERS)
    assert other.name == "llm-lineage-published-instruct" and other.tags["variant"] == "instruct"
    assert other.model_id != first.model_id and client.get_logged_model(other.model_id).name == "published_instruct"


def test_a_published_model_needs_its_content_hash():
    with pytest.raises(ValueError, match="sha256"):
        register_published(None, "x", "ref", None, "not-a-hash", "run", "base", {}, "f")
