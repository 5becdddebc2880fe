"""Concurrency pools: which steps compete for the same hardware.

Every step that runs a model (training, evaluation generation, on-policy sampling) takes a slot in the
accelerator pool. ``dagster.yaml`` gives it one slot: one GPU, or on a CPU-only machine all its cores.
Two such steps side by side would each start a full set of torch threads on the same cores; on 2 cores
that oversubscription made a training step run ~2× slower than alone. Raise the limit on a node with
more GPUs (``dagster instance concurrency set gpu N``).
"""

ACCELERATOR_POOL = "gpu"
