"""Concurrency pools: which steps compete for the same hardware.

Every step that runs a model (training, evaluation generation, on-policy sampling) takes a slot in the
accelerator pool. ``dagster.yaml`` gives it one slot: one GPU, or on a CPU-only machine all its cores.
Two such steps side by side would each start a full set of torch threads on the same cores; on 2 cores
that oversubscription made a training step run ~2× slower than alone. Raise the limit on a node with
more GPUs (``dagster instance concurrency set gpu N``).

The pool limits steps across runs. Within a run the executor limits them too, by the tag below
(``pipelines/runtime/executor.py``): it looks at its own limit on every pass, while a step that lost the race
for a pool slot is only looked at again after Dagster's claim backoff (1 s, then 1.1 s, 1.21 s, ...).
"""

from pipelines.runtime.cluster import ACCELERATOR_K8S_CONFIG, K8S_CONFIG_TAG

ACCELERATOR_POOL = "gpu"
POOL_TAG = "llm-lineage/pool"
# What every model-running asset passes to @dg.asset. The dagster-k8s tag matters only on a cluster
# (``LLM_LINEAGE_EXECUTOR=k8s``): it sends the step's Kubernetes Job to a GPU node (pipelines/runtime/cluster.py).
ACCELERATOR = {"pool": ACCELERATOR_POOL, "op_tags": {POOL_TAG: ACCELERATOR_POOL, K8S_CONFIG_TAG: ACCELERATOR_K8S_CONFIG}}
