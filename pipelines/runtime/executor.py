"""The code location's executor: one process per step, forked from a warm server.

A step runs in its own process (a crashed or leaking step cannot take the run down; memory and GPU
memory go back when the step ends; independent branches run side by side). Spawning a fresh Python
for every step would re-import Dagster's storage, MLflow and this project each time: ~3 s per step,
most of an unchanged re-run. With ``forkserver`` those modules are imported once into a server
process that every step process is forked from, so a step starts in well under a second.

The server only imports and builds plain Python objects (Dagster's migration map, the repository):
no threads, no CUDA context, no open files, so forking it is safe. Training itself still runs in
Pipes subprocesses (``resources/launcher.py``). The preload list is in ``pipelines/runtime/fork_server.py``.
"""

from __future__ import annotations

import os

import dagster as dg

from assets._pools import ACCELERATOR_POOL, POOL_TAG
from pipelines.runtime.fork_server import PRELOADED_MODULES

# Model-running steps at once within one run: keep it equal to the gpu pool's limit in dagster.yaml
# (1; raise both on a node with more GPUs). Why the executor limits them as well: ``assets/_pools.py``.
ACCELERATOR_STEPS_PER_RUN = int(os.environ.get("LLM_LINEAGE_ACCELERATOR_STEPS_PER_RUN", "1"))

step_executor = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": list(PRELOADED_MODULES)}},
     "tag_concurrency_limits": [{"key": POOL_TAG, "value": ACCELERATOR_POOL, "limit": ACCELERATOR_STEPS_PER_RUN}]},
    name="forkserver_multiprocess")
