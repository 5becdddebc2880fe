"""Shared fixtures: a real MLflow tracking server on 127.0.0.1, smoke-profile resources, GSM8K paths; the
``slow`` marker (servers, Dagster CLI runs, subprocess training, a browser) that ``make test-fast`` leaves out, and
the ``engines`` marker (Ray, S3, Postgres, Kubernetes, vLLM) that ``make test`` leaves to ``make test-engines``."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from unittest import mock
from pathlib import Path

import dagster as dg
import pytest
import requests

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
# The test lineages run on smoke-profile resources: build the smoke profile's number of self-improvement rounds (1)
# into the code location, here and in the Dagster CLI processes the tests start (assets/self_improvement.py).
os.environ.setdefault("LLM_LINEAGE_ROUNDS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS_DIR = REPO_ROOT / "tests"
GSM8K_DIR = REPO_ROOT / "data" / "gsm8k"  # committed with the repository (data/README.md)
# ``slow`` (make test: everything; make test-fast: -m "not slow", unit tests only). A test is slow when it uses
# one of SLOW_FIXTURES (directly or through another fixture), when its module imports a server starter
# (SLOW_HELPERS) or sets ``pytestmark = pytest.mark.slow``, or when its module or itself is in SLOW: it
# starts servers, CLI or worker processes, Dagster runs of training, or a browser.
SLOW_FIXTURES = frozenset({"mlflow_server", "materialized_lineage", "postgres"})
SLOW_HELPERS = frozenset({"start_mlflow_server", "start_dagster_ui"})
SLOW = frozenset({  # paths relative to tests/, whole modules or module::test
    "test_end_to_end.py",  # the whole graph in process, then again through `dagster asset materialize`
    "test_concurrent_runs.py",  # two `dagster asset materialize` CLI runs at once
    "assets/test_checkpoint_assets.py",  # Pipes subprocess training, 2-process DDP, kill and resume
    "pipelines/test_train_entrypoint.py",  # training in a subprocess, killed and resumed
    "resources/test_launcher.py",  # training through the launcher's subprocess
    "resources/test_publish_atomic.py",  # writer and reader processes, a writer killed mid-publish
    "resources/test_mlflow_tracking.py::test_default_sqlite_store_takes_parallel_writers_without_lock_errors",
    "resources/test_duckdb_store.py::test_parallel_writer_processes_wait_instead_of_failing",
    "pipelines/test_safe_loading.py::test_trust_remote_code_is_an_explicit_opt_in_logged_as_a_warning",
    "test_definitions.py::test_steps_fork_from_a_preloaded_server",
    "test_definitions.py::test_a_forked_step_inherits_the_preloaded_heap_frozen_and_collects_its_own_garbage",
    "test_definitions.py::test_workspace_yaml_validates_with_the_dagster_cli",
    "test_instance_config.py::test_dagster_cli_reads_the_instance_config",
})
# ``engines`` (make test-engines; .ci/run runs it after make test): the cluster deployment's engines, each started
# for real here: Ray, the S3 server, Postgres, the recording Kubernetes API, vLLM in its own virtualenv (issue #21).
# These modules are slow too; make test leaves them to their own target so that it stays the quicker loop.
ENGINES = frozenset({
    "test_shared_nothing.py", "test_object_storage.py", "test_cluster_routing.py", "test_postgres_storage.py",
    "resources/test_ray_launcher.py", "resources/test_object_checkpoints.py", "resources/test_object_tables.py",
    "pipelines/test_ray_staging.py", "pipelines/test_vllm_backend.py", "pipelines/test_ray_generation.py",
})
_renamed = sorted(path for path in ENGINES if not (TESTS_DIR / path).exists())
if _renamed:  # a renamed module would otherwise drop out of make test-engines and run in make test unnoticed
    raise pytest.UsageError(f"tests/conftest.py ENGINES names modules that do not exist: {_renamed}")
UNMARKED_SLOW_S = 40  # a test not marked slow whose call takes longer is named at the end of the session
SERVER_START_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reconfigured(resource: dg.ConfigurableResource, **changes) -> dg.ConfigurableResource:
    """A copy of ``resource`` with some fields changed. (``model_copy`` is not enough: Dagster rebuilds a
    resource from the config it was constructed with, so a copied field would silently revert.)"""
    fields = {name: getattr(resource, name) for name in type(resource).model_fields}
    return type(resource)(**{**fields, **changes})


def _is_slow(item: pytest.Item) -> bool:
    module = getattr(item, "module", None)
    relative = item.path.relative_to(TESTS_DIR).as_posix() if item.path.is_relative_to(TESTS_DIR) else ""
    name = getattr(item, "originalname", item.name)  # without the parametrize id
    return bool(SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
                or relative in SLOW or f"{relative}::{name}" in SLOW
                or (module is not None and SLOW_HELPERS & set(vars(module))))


def _is_engine(item: pytest.Item) -> bool:
    return item.path.is_relative_to(TESTS_DIR) and item.path.relative_to(TESTS_DIR).as_posix() in ENGINES


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _is_engine(item):
            item.add_marker(pytest.mark.engines)
        if _is_slow(item):
            item.add_marker(pytest.mark.slow)


_unmarked_slow: list[tuple[str, float]] = []


def pytest_runtest_logreport(report):
    if report.when == "call" and report.duration > UNMARKED_SLOW_S and "slow" not in report.keywords:
        _unmarked_slow.append((report.nodeid, report.duration))


def pytest_terminal_summary(terminalreporter):
    if _unmarked_slow:
        terminalreporter.section(f"tests over {UNMARKED_SLOW_S}s not marked slow (see SLOW_* in tests/conftest.py)")
        for nodeid, seconds in _unmarked_slow:
            terminalreporter.write_line(f"{seconds:6.1f}s {nodeid}")


@pytest.fixture(scope="session", autouse=True)
def temp_dirs_are_data_roots(tmp_path_factory):
    """Test inputs live in pytest's temp dirs: allow them as data roots (pipelines/paths.py), the way a
    deployment lists its data directories in LLM_LINEAGE_DATA_ROOTS. Subprocesses inherit it."""
    from pipelines.paths import DATA_ROOTS_ENV

    previous = os.environ.get(DATA_ROOTS_ENV)
    os.environ[DATA_ROOTS_ENV] = str(tmp_path_factory.getbasetemp())
    yield
    if previous is None:
        os.environ.pop(DATA_ROOTS_ENV, None)
    else:
        os.environ[DATA_ROOTS_ENV] = previous


def start_mlflow_server(root: Path, port: int) -> subprocess.Popen:
    """``mlflow server`` with a SQLite backend under ``root`` on 127.0.0.1:``port``, once it answers."""
    log = open(root / "server.log", "a")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True)  # own group: its workers too
    log.close()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                return process
        except requests.RequestException:
            time.sleep(0.5)
    kill_process_group(process, signal.SIGKILL)
    raise RuntimeError(f"mlflow server did not start in {SERVER_START_TIMEOUT_S}s")


def kill_process_group(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(process.pid, sig)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> str:
    """``mlflow server`` with a SQLite backend in a temp dir, on loopback; yields its URL."""
    port = _free_port()
    process = start_mlflow_server(tmp_path_factory.mktemp("mlflow_server"), port)
    yield f"http://127.0.0.1:{port}"
    kill_process_group(process)


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL on 127.0.0.1 and a free port, in a fresh directory (tests/fixtures/postgres.py): yields
    the server (``.url("dagster")``, ``.url("mlflow")``); stopped by ``pg_ctl stop -m fast``, then by PID.
    Skipped only when the server binaries are missing (Debian's ``postgresql`` package; the development and
    CI machines have it)."""
    from tests.fixtures.postgres import find_pg_bin, start_postgres

    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl, psql) not found: install Debian's postgresql")
    server = start_postgres(bin_dir)
    yield server
    server.stop()


@pytest.fixture
def lineage_home(tmp_path) -> Path:
    return tmp_path / "lineage"


@pytest.fixture(scope="session")
def gsm8k_dir() -> Path:
    if not (GSM8K_DIR / "train.jsonl").is_file():
        pytest.fail(f"GSM8K files expected at {GSM8K_DIR} (committed with the repository: data/README.md)")
    return GSM8K_DIR


@dataclass
class MaterializedLineage:
    """The whole smoke-profile graph, materialized once per session into a persistent instance."""

    result: dg.ExecuteInProcessResult
    resources: dict
    dagster_home: Path
    lineage_home: Path
    tracking_uri: str


@pytest.fixture(scope="session")
def materialized_lineage(tmp_path_factory, mlflow_server) -> MaterializedLineage:
    """Shared by the end-to-end, webserver and browser tests: the webserver serves this instance."""
    from pipelines.definitions import PROJECT_ROOT, all_assets, all_checks, default_resources

    root = tmp_path_factory.mktemp("e2e")
    dagster_home, lineage_home = root / "dagster_home", root / "lineage"
    dagster_home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    resources = default_resources(lineage_home, profile="smoke", tracking_uri=mlflow_server)
    definitions = dg.Definitions(assets=all_assets, asset_checks=all_checks, resources=resources)
    job = definitions.resolve_implicit_global_asset_job_def()
    # DAGSTER_HOME as every Dagster process of this home has it: the step logs go under it
    with mock.patch.dict(os.environ, {"DAGSTER_HOME": str(dagster_home)}), \
            dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        result = job.execute_in_process(instance=instance)
    return MaterializedLineage(result, resources, dagster_home, lineage_home, mlflow_server)
