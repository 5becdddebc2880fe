"""Imported by the fork server, and only there (it is the server's preload module): the imports every
step process needs, done once, with the heap then frozen for forking.

The garbage collector is off while the server imports (with it on, ~1.2 s of ~4.4 s were full
collections over objects that live as long as the server). One collection then drops the import
garbage and the survivors are frozen, so step processes forked from the server never walk, or copy
on write, the inherited heap in their own collections: what Python's ``gc.freeze`` documentation
recommends for a server that forks workers.

It also builds, once for all steps, the code location's repository and jobs.
"""

import gc
import importlib

from pipelines.runtime.fork_server import SERVER_IMPORTS


def resolve_definitions() -> None:
    """Builds the repository and its jobs from the code location once (Dagster caches both on the
    ``Definitions`` object); each step would otherwise build them again before it starts (~30 ms)."""
    from pipelines.definitions import defs

    defs.get_repository_def().get_all_jobs()


gc.disable()
try:
    for module in SERVER_IMPORTS:
        importlib.import_module(module)
    resolve_definitions()
finally:  # an import error must not leave forked steps without a collector
    gc.collect()
    gc.freeze()
    gc.enable()
