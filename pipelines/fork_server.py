"""The fork server that step processes are forked from (see ``pipelines/executor.py``), and starting it
early.

Dagster's multiprocess executor starts the server when it launches the first step, and the server
imports everything in ``SERVER_IMPORTS`` (through ``pipelines/fork_server_preload.py``) before it
forks anything: ~2-3 s on one core during which no step runs (a sixth of an unchanged re-run). A
command that is about to run the job can start it sooner, while the CLI itself is still importing
and loading the code location on the other core: ``pipelines/dagster_cli.py`` does, and the demo
runs the CLI through it. This module imports no Dagster, so that the start comes before those imports.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
from collections.abc import Sequence

# Imported once by the fork server: what nearly every step process needs and importing the code
# location does not already import: Dagster's SQLite instance storage (and what its instance imports
# lazily: upath for the defs-state storage), MLflow's SQL stores. Not torch and transformers (~1.3 s):
# only the three evaluation steps load a model in their own process (training runs in a subprocess),
# and no step could start before the server had imported them. Those steps import them themselves.
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
)
# The server's only preload module: it imports SERVER_IMPORTS with the garbage collector tuned for forking.
PRELOADED_MODULES = ("pipelines.fork_server_preload",)


def start_fork_server(preload: Sequence[str] = PRELOADED_MODULES) -> None:
    """Starts the fork server now, in the background. The executor later finds it running and forks
    steps from it (the preload list is the same, and it is only read when a server starts)."""
    multiprocessing.get_context("forkserver").set_forkserver_preload(list(preload))
    multiprocessing.forkserver.ensure_running()
