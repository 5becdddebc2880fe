"""Routing steps on a Kubernetes cluster: each step a Kubernetes Job, model steps on GPU nodes.

Set ``LLM_LINEAGE_EXECUTOR=k8s`` in the code location's environment (the Helm chart's user deployment, or
the run worker's) and the code location runs every step with dagster-k8s's ``k8s_job_executor`` instead of
the local forkserver executor. What each step's Job asks for comes from its op tags:

- model steps (training, evaluation generation, on-policy sampling: the ``gpu`` pool) carry
  ``dagster-k8s/config`` with ``ACCELERATOR_K8S_CONFIG``: one ``nvidia.com/gpu``, the toleration GPU node
  pools carry, and a node selector on ``LLM_LINEAGE_GPU_NODE_LABEL`` (GKE's accelerator label by default);
- every other step gets ``DATA_STEP_K8S_CONFIG`` (CPU and memory requests, no GPU) through the executor's
  ``step_k8s_config``.

The accelerator limits are kept: the ``gpu`` pool limits model steps across runs (``concurrency`` in
``deploy/k8s/dagster.yaml``), and the executor limits them within a run by the same op tag as locally.
Manifests are those dagster-k8s builds; ``tests/test_cluster_routing.py`` runs the executor against a
recording Kubernetes API on 127.0.0.1 and checks the Jobs it submits (no cluster runs here).
"""

from __future__ import annotations

import os

EXECUTOR_ENV = "LLM_LINEAGE_EXECUTOR"
K8S_CONFIG_TAG = "dagster-k8s/config"  # the op tag dagster-k8s reads per step
GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL = os.environ.get("LLM_LINEAGE_GPU_NODE_LABEL", "cloud.google.com/gke-accelerator")
GPU_NODE_VALUE = os.environ.get("LLM_LINEAGE_GPU_NODE_VALUE", "nvidia-h100-80gb")

ACCELERATOR_K8S_CONFIG = {
    # Requests equal limits: the scheduler places the pod only where a whole GPU and this much memory are free.
    "container_config": {"resources": {"requests": {"cpu": "8", "memory": "64Gi", GPU_RESOURCE: "1"},
                                       "limits": {"memory": "64Gi", GPU_RESOURCE: "1"}}},
    "pod_spec_config": {"node_selector": {GPU_NODE_LABEL: GPU_NODE_VALUE},
                        "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]},
}
# Data steps read and write tables and files: a couple of cores, no accelerator node.
DATA_STEP_K8S_CONFIG = {
    "container_config": {"resources": {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}},
}


def k8s_executor():
    """dagster-k8s's step-per-Job executor, configured for this lineage. The steps' image: ``DAGSTER_CURRENT_IMAGE``
    (Dagster's variable for the image the code runs in; the Helm chart sets it on user deployments) when set,
    else the image of the code location the run was launched from."""
    from dagster_k8s import k8s_job_executor

    from assets._pools import ACCELERATOR_POOL, POOL_TAG
    from pipelines.runtime.executor import ACCELERATOR_STEPS_PER_RUN

    return k8s_job_executor.configured(
        {"tag_concurrency_limits": [{"key": POOL_TAG, "value": ACCELERATOR_POOL, "limit": ACCELERATOR_STEPS_PER_RUN}],
         "step_k8s_config": DATA_STEP_K8S_CONFIG,
         **({"job_image": os.environ["DAGSTER_CURRENT_IMAGE"]} if os.environ.get("DAGSTER_CURRENT_IMAGE") else {})},
        name="k8s_step_jobs")


def selected_executor(local_executor):
    """The executor ``LLM_LINEAGE_EXECUTOR`` names: ``local`` (default, the forkserver executor) or ``k8s``."""
    choice = os.environ.get(EXECUTOR_ENV, "local")
    if choice == "local":
        return local_executor
    if choice == "k8s":
        return k8s_executor()
    raise ValueError(f"{EXECUTOR_ENV}={choice!r}: expected 'local' or 'k8s'")
