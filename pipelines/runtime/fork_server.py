"""The fork server that step processes are forked from (see ``pipelines/runtime/executor.py``).

Dagster's multiprocess executor starts the server when it launches the first step, and the server
imports everything in ``SERVER_IMPORTS`` (through ``pipelines/runtime/fork_server_preload.py``) once, before
it forks any step. Only public modules are named: importing the code location brings in Dagster, and
Dagster's own storage modules come with the first instance a step opens.
"""

from __future__ import annotations

# Imported once by the fork server: the code location (Dagster, the assets, their resources) and what
# nearly every step needs that it does not import: upath (the instance's defs-state storage) and MLflow's
# SQL stores. Not torch and transformers (~1.3 s): only the three evaluation steps load a model in their
# own process (training runs in a subprocess), and they import them themselves.
SERVER_IMPORTS = (
    "pipelines.definitions",
    "upath.core",
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
)
# The server's only preload module: it imports SERVER_IMPORTS with the garbage collector tuned for forking.
PRELOADED_MODULES = ("pipelines.runtime.fork_server_preload",)
