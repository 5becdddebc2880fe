"""Routing on a Kubernetes cluster (issue #21), without a cluster: the deployment's instance file loads into a
real instance on a real Postgres with dagster-k8s's run launcher, and a real `dagster asset materialize` with
``LLM_LINEAGE_EXECUTOR=k8s`` makes dagster-k8s's step executor submit one Kubernetes Job per step to a
recording Kubernetes API on 127.0.0.1 (tests/fixtures/kube_api.py). The Jobs are checked as a cluster would
receive them: the model step on a GPU node with one GPU, the data step with no GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pipelines.definitions import PROJECT_ROOT
from pipelines.runtime.cluster import GPU_NODE_LABEL, GPU_RESOURCE
from tests.fixtures.kube_api import RecordingKubeApi

CLUSTER_YAML = PROJECT_ROOT / "deploy" / "k8s" / "dagster.yaml"
NAMESPACE, IMAGE = "lineage", "registry.example/llm-lineage:test"
MODEL_STEP, DATA_STEP = "base_checkpoint", "raw_problems"

pytestmark = pytest.mark.slow


def _instance_home(tmp_path: Path, kubeconfig: Path) -> Path:
    """The deployment's dagster.yaml as written, but the run launcher reads a kubeconfig: outside a cluster there
    is no in-cluster service account."""
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    launcher = config["run_launcher"]["config"]
    assert launcher["load_incluster_config"] is True  # what a cluster uses
    launcher.update(load_incluster_config=False, kubeconfig_file=str(kubeconfig))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


def _env(postgres, database: str, home: Path, kubeconfig: Path, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "DAGSTER_HOME": str(home), "KUBECONFIG": str(kubeconfig),
            "DAGSTER_PG_HOST": postgres.host, "DAGSTER_PG_PORT": str(postgres.port),
            "DAGSTER_PG_USERNAME": postgres.role, "DAGSTER_PG_PASSWORD": postgres.password, "DAGSTER_PG_DB": database,
            "LLM_LINEAGE_K8S_NAMESPACE": NAMESPACE, "LLM_LINEAGE_EXECUTOR": "k8s", "DAGSTER_CURRENT_IMAGE": IMAGE,
            "MLFLOW_TRACKING_URI": "http://mlflow.lineage.svc:5000",  # passed on to the pods; never contacted here
            "LLM_LINEAGE_CHECKPOINT_URL": "s3://lineage/checkpoints", "AWS_ENDPOINT_URL": "http://minio.lineage.svc:9000",
            "LLM_LINEAGE_TABLES_URL": "s3://lineage/tables", "LLM_LINEAGE_HOME": str(tmp_path / "lineage"), "LLM_LINEAGE_PROFILE": "smoke"}


def _container(job: dict) -> dict:
    [container] = job["spec"]["template"]["spec"]["containers"]
    return container


def test_each_step_becomes_a_kubernetes_job_and_model_steps_land_on_gpu_nodes(postgres, tmp_path):
    postgres.create_database("cluster_routing")
    with RecordingKubeApi() as kube:
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig", NAMESPACE)
        home = _instance_home(tmp_path, kubeconfig)
        env = _env(postgres, "cluster_routing", home, kubeconfig, tmp_path)
        with pytest.MonkeyPatch.context() as patch:
            for key in ("DAGSTER_HOME", "KUBECONFIG", "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USERNAME",
                        "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB", "LLM_LINEAGE_K8S_NAMESPACE"):
                patch.setenv(key, env[key])
            with dg.DagsterInstance.from_config(str(home)) as instance:
                assert type(instance.run_launcher).__name__ == "K8sRunLauncher"
                assert type(instance.run_storage).__name__ == "PostgresRunStorage"
                assert instance.get_concurrency_config().pool_config.default_pool_limit == 1

        # The steps fail (nothing runs the Jobs); the run ends once both were submitted.
        run = subprocess.run([sys.executable, "-m", "dagster", "asset", "materialize", "-m", "pipelines.definitions",
                              "--select", f"{MODEL_STEP},{DATA_STEP}"], cwd=PROJECT_ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode != 0, run.stdout[-2000:]
        jobs = {job["body"]["metadata"]["labels"]["dagster/op"]: job for job in kube.jobs}

    assert set(jobs) == {MODEL_STEP, DATA_STEP}, (sorted(jobs), run.stderr[-3000:])
    assert {job["namespace"] for job in jobs.values()} == {NAMESPACE}
    model, data = (jobs[step]["body"] for step in (MODEL_STEP, DATA_STEP))
    for job in (model, data):
        container = _container(job)
        assert container["image"] == IMAGE
        assert container["args"][:3] == ["dagster", "api", "execute_step"]  # the step runs in the Job's pod
        assert {"name": "LLM_LINEAGE_EXECUTOR", "value": "k8s"} in container["env"]  # from the run launcher
        assert {"name": "LLM_LINEAGE_CHECKPOINT_URL", "value": "s3://lineage/checkpoints"} in container["env"]
        assert {"name": "LLM_LINEAGE_TABLES_URL", "value": "s3://lineage/tables"} in container["env"]
        assert {"secretRef": {"name": "lineage-object-storage"}} in container["envFrom"]

    resources = _container(model)["resources"]
    assert resources["limits"][GPU_RESOURCE] == "1" and resources["requests"][GPU_RESOURCE] == "1"
    pod = model["spec"]["template"]["spec"]
    assert GPU_NODE_LABEL in pod["nodeSelector"]
    assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]

    data_resources = _container(data)["resources"]
    assert GPU_RESOURCE not in {**data_resources.get("limits", {}), **data_resources.get("requests", {})}
    assert data_resources["requests"]["cpu"] == "1"
    assert not data["spec"]["template"]["spec"].get("nodeSelector")
