"""One alembic script directory per process for Dagster's own migrations, built once in the fork server.

Every Dagster step process opens its SQLite instance storage and checks the schema revision of each
database it touches: the run, schedule, event-log index and run-shard files, four checks per step.
Each check calls ``ScriptDirectory.from_config``, which builds a new script directory: it executes
every migration script of Dagster's (about 40 files) and builds the revision map, ~25 ms each time.
In an unchanged re-run that is ~0.1 s of a ~0.5 s step (py-spy of a re-run: 290 of 1,786 step samples).

Those scripts ship inside the installed Dagster package and cannot change while a process lives, so
the fork server builds their directory once and every step process shares it. Other script
locations (a user's own alembic setup) are built fresh as before.
"""

from __future__ import annotations

from alembic.config import Config
from alembic.script import ScriptDirectory
from dagster._core.storage.sql import ALEMBIC_SCRIPTS_LOCATION, get_alembic_config

_shared: dict[tuple, ScriptDirectory] = {}
_build = ScriptDirectory.from_config.__func__  # alembic's own, unshared constructor


def _key(config: Config) -> tuple | None:
    location = config.get_alembic_option("script_location")
    if location != ALEMBIC_SCRIPTS_LOCATION:
        return None
    return location, tuple(config.get_version_locations_list() or ())


def _from_config(cls: type[ScriptDirectory], config: Config) -> ScriptDirectory:
    key = _key(config)
    if key is None:
        return _build(cls, config)
    if key not in _shared:
        _shared[key] = _build(cls, config)
    return _shared[key]


def share_dagster_script_directory() -> str:
    """Makes ``ScriptDirectory.from_config`` reuse one directory for Dagster's migrations and builds
    its revision map now (before the server forks). Returns the head revision."""
    from dagster._core.storage.runs.sqlite import sqlite_run_storage

    ScriptDirectory.from_config = classmethod(_from_config)
    config = get_alembic_config(sqlite_run_storage.__file__)  # as the run storage builds it
    return ScriptDirectory.from_config(config).as_revision_number("head")
