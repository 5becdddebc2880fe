"""The README's "Production storage" settings, as written, against a real Postgres (issue #21): Dagster's instance
storage from its YAML block and MLflow's backend store from its ``--backend-store-uri``, both read from README.md
so the docs cannot drift from what runs. A bare ``postgresql://`` (SQLAlchemy 2.1: psycopg 3, not installed)
fails, as the README says."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
from pathlib import Path
from unittest import mock

import dagster as dg
import psycopg2
import pytest
import sqlalchemy
import yaml

from pipelines.definitions import PROJECT_ROOT, all_assets, all_checks, default_resources

README = Path(PROJECT_ROOT, "README.md").read_text()
SECTION = README[README.index("### Production storage"):]
SECTION = SECTION[:SECTION.index("\n## ")]
[STORAGE_YAML] = re.findall(r"^```yaml\n(.*?)^```", SECTION, re.S | re.M)
[SERVER_BASH] = re.findall(r"^```bash\n(.*?)^```", SECTION, re.S | re.M)
ASSETS = ["raw_problems", "eval_suites", "training_problems", "raw_corpus", "tokenizer"]


def readme_backend_store_uri() -> sqlalchemy.engine.URL:
    words = shlex.split(SERVER_BASH.replace("\\\n", " ").splitlines()[0], posix=True)
    return sqlalchemy.engine.make_url(words[words.index("--backend-store-uri") + 1])


def write_instance(dagster_home: Path, storage_yaml: str) -> None:
    """The project's dagster.yaml (as `make setup` copies it) with the README's storage block next to it."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text((PROJECT_ROOT / "dagster.yaml").read_text() + "\n" + storage_yaml)


def pg_env(postgres) -> dict[str, str]:
    return {"DAGSTER_PG_HOST": postgres.host, "DAGSTER_PG_PORT": str(postgres.port),
            "DAGSTER_PG_USERNAME": postgres.role, "DAGSTER_PG_PASSWORD": postgres.password}


def test_the_readme_names_the_psycopg2_driver():
    assert yaml.safe_load(STORAGE_YAML)["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    assert readme_backend_store_uri().drivername == "postgresql+psycopg2"


def test_readme_postgres_settings_hold_dagster_runs_and_mlflow_runs(postgres, tmp_path):
    dagster_home, lineage_home = tmp_path / "dagster_home", tmp_path / "lineage"
    write_instance(dagster_home, STORAGE_YAML)
    # MLflow's store: the README's URI (driver, database), on this server as the test's role
    readme_uri = readme_backend_store_uri()
    tracking_uri = readme_uri.set(username=postgres.role, password=postgres.password, host=postgres.host,
                                  port=postgres.port).render_as_string(hide_password=False)
    assert readme_uri.database == "mlflow" and tracking_uri.startswith("postgresql+psycopg2://")

    resources = default_resources(lineage_home, profile="smoke", tracking_uri=tracking_uri)
    job = dg.Definitions(assets=all_assets, asset_checks=all_checks, resources=resources) \
        .resolve_implicit_global_asset_job_def().get_subset(asset_selection={dg.AssetKey(a) for a in ASSETS})
    with mock.patch.dict(os.environ, {"DAGSTER_HOME": str(dagster_home), **pg_env(postgres)}):
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
            result = job.execute_in_process(instance=instance)
        assert result.success
        run_id = result.run_id

        # a fresh instance from the same config reads the run and every materialization back from Postgres
        with dg.DagsterInstance.from_config(str(dagster_home)) as fresh:
            run = fresh.get_run_by_id(run_id)
            assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
            for asset in ASSETS:
                materialization = fresh.get_latest_materialization_event(dg.AssetKey(asset))
                assert materialization is not None and materialization.run_id == run_id, asset
    assert not (dagster_home / "history").exists()  # nothing went to the default SQLite files
    with psycopg2.connect(host=postgres.host, port=postgres.port, user=postgres.role, password=postgres.password,
                          dbname="dagster") as connection, connection.cursor() as cursor:
        cursor.execute("SELECT run_id, status FROM runs")
        assert cursor.fetchall() == [(run_id, "SUCCESS")]
        cursor.execute("SELECT DISTINCT asset_key FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")
        assert {dg.AssetKey.from_db_string(key).to_user_string() for (key,) in cursor.fetchall()} == set(ASSETS)

    # the tokenizer's MLflow run is in the Postgres store, linked to the Dagster run; artifacts under the home
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(resources["mlflow"].experiment_name)
    [mlflow_run] = client.search_runs([experiment.experiment_id], f"tags.`dagster.run_id` = '{run_id}'")
    assert mlflow_run.data.tags["dagster.asset_key"] == "tokenizer" and mlflow_run.info.status == "FINISHED"
    assert "vocab_size" in mlflow_run.data.params
    assert experiment.artifact_location == (lineage_home / "mlflow" / "artifacts").resolve().as_uri()
    with psycopg2.connect(host=postgres.host, port=postgres.port, user=postgres.role, password=postgres.password,
                          dbname="mlflow") as connection, connection.cursor() as cursor:
        cursor.execute("SELECT run_uuid FROM runs")
        assert cursor.fetchall() == [(mlflow_run.info.run_id,)]


@pytest.mark.skipif(importlib.util.find_spec("psycopg") is not None,
                    reason="psycopg 3 is installed: a bare postgresql:// would work here")
def test_a_bare_postgresql_scheme_fails_without_psycopg3(postgres, tmp_path):
    """What the README warns about: SQLAlchemy 2.1 maps postgresql:// to psycopg 3, which is not installed."""
    dagster_home = tmp_path / "dagster_home"
    write_instance(dagster_home, STORAGE_YAML.replace("      scheme: postgresql+psycopg2\n", ""))
    assert "scheme" not in (dagster_home / "dagster.yaml").read_text()
    with mock.patch.dict(os.environ, {"DAGSTER_HOME": str(dagster_home), **pg_env(postgres)}):
        with pytest.raises(ModuleNotFoundError, match="psycopg"):
            with dg.DagsterInstance.from_config(str(dagster_home)):
                pass
    from mlflow import MlflowClient

    with pytest.raises(Exception, match="psycopg"):
        MlflowClient(tracking_uri=postgres.url("mlflow", driver=None)).search_experiments()
    shutil.rmtree(dagster_home)
