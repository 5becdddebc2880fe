"""The code location's executor: one process per step, forked from a warm server.

A step runs in its own process (a crashed or leaking step cannot take the run down; memory and GPU
memory go back when the step ends; independent branches run side by side). Spawning a fresh Python
for every step would re-import Dagster's storage, MLflow, torch and this project each time: ~3 s per
step, most of an unchanged re-run. With ``forkserver`` those modules are imported once into a server
process that every step process is forked from, so a step starts in well under a second.

Nothing is initialised in the server beyond imports: no threads, no CUDA context, no open files, so
forking it is safe. Training itself still runs in Pipes subprocesses (``resources/launcher.py``).
"""

from __future__ import annotations

import dagster as dg

# Imported once by the fork server. What a step process needs that importing the code location does
# not already import: Dagster's SQLite instance storage, MLflow's SQL stores, the ML stack.
PRELOADED_MODULES = (
    "pipelines.definitions",
    "dagster._core.storage.sqlite_storage",
    "dagster._core.storage.runs",
    "dagster._core.storage.event_log",
    "dagster._core.storage.schedules",
    "dagster._daemon",
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "torch",
    "transformers",
)

step_executor = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": list(PRELOADED_MODULES)}}}, name="forkserver_multiprocess")
