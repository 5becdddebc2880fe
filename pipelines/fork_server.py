"""The fork server that step processes are forked from (see ``pipelines/executor.py``), and starting it
early.

Dagster's multiprocess executor starts the server when it launches the first step, and the server
imports everything in ``SERVER_IMPORTS`` (through ``pipelines/fork_server_preload.py``) before it
forks anything: ~3 s on one core during which no step runs (most of an unchanged re-run). A command
that is about to run the job can start it sooner, while the CLI itself is still loading the code
location on the other core: the demo does, by setting ``START_EARLY_VARIABLE`` for its
``dagster asset materialize``. This module imports no Dagster, so that the start happens before the
code location's heavy imports.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
from collections.abc import Sequence

# Imported once by the fork server. What a step process needs that importing the code location does
# not already import: Dagster's SQLite instance storage (and what its instance imports lazily: upath
# for the defs-state storage), MLflow's SQL stores, the ML stack.
SERVER_IMPORTS = (
    "pipelines.definitions",
    "dagster._core.storage.sqlite_storage",
    "dagster._core.storage.defs_state.blob_storage_state_storage",
    "upath.core",
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
# The server's only preload module: it imports SERVER_IMPORTS with the garbage collector tuned for forking.
PRELOADED_MODULES = ("pipelines.fork_server_preload",)
START_EARLY_VARIABLE = "LLM_LINEAGE_START_FORK_SERVER"


def start_early_if_requested(preload: Sequence[str] = PRELOADED_MODULES) -> bool:
    """Starts the fork server now (in the background) if ``START_EARLY_VARIABLE`` is ``1``.

    The variable is removed first, so neither the server (which imports the code location) nor the
    steps forked from it start another. The executor later finds the server running and uses it: the
    preload list is the same, and it is only read when a server starts.
    """
    if os.environ.pop(START_EARLY_VARIABLE, "") != "1":
        return False
    multiprocessing.get_context("forkserver").set_forkserver_preload(list(preload))
    multiprocessing.forkserver.ensure_running()
    return True
