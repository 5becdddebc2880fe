"""The fork server's shared alembic script directory: same answers as alembic's own, built once."""

from __future__ import annotations

import sqlite3

import dagster as dg
import pytest
from alembic.script import ScriptDirectory
from dagster._core.storage.event_log.sqlite import sqlite_event_log
from dagster._core.storage.runs.sqlite import sqlite_run_storage
from dagster._core.storage.schedules.sqlite import sqlite_schedule_storage
from dagster._core.storage.sql import get_alembic_config

from pipelines import alembic_scripts


@pytest.fixture
def shared(monkeypatch):
    """Shares for this test only: alembic's classmethod and the cache are put back afterwards."""
    monkeypatch.setattr(ScriptDirectory, "from_config", ScriptDirectory.__dict__["from_config"])
    monkeypatch.setattr(alembic_scripts, "_shared", {})
    return alembic_scripts.share_dagster_script_directory()


def test_every_dagster_storage_gets_one_directory_with_alembics_own_head(shared):
    unshared = alembic_scripts._build(ScriptDirectory, get_alembic_config(sqlite_event_log.__file__))
    directories = {id(ScriptDirectory.from_config(get_alembic_config(module.__file__)))
                   for module in (sqlite_run_storage, sqlite_event_log, sqlite_schedule_storage)}
    assert len(directories) == 1
    assert shared == unshared.as_revision_number("head")
    assert [s.revision for s in ScriptDirectory.from_config(get_alembic_config(sqlite_run_storage.__file__))
            .walk_revisions()] == [s.revision for s in unshared.walk_revisions()]


def test_other_script_locations_are_built_fresh_each_time(shared, tmp_path):
    (tmp_path / "versions").mkdir()
    config = get_alembic_config(sqlite_run_storage.__file__, script_location=str(tmp_path))
    assert ScriptDirectory.from_config(config) is not ScriptDirectory.from_config(config)


def test_a_new_instance_is_stamped_and_reopened_through_the_shared_directory(shared, tmp_path):
    @dg.asset
    def one() -> int:
        return 1

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        assert dg.materialize([one], instance=instance).success
    stamped = sqlite3.connect(tmp_path / "history" / "runs.db").execute("SELECT version_num FROM alembic_version")
    assert stamped.fetchall() == [(shared,)]
    with dg.instance_for_test(temp_dir=str(tmp_path)) as reopened:  # the revision check on existing files
        assert reopened.get_latest_materialization_event(dg.AssetKey("one")) is not None
