"""Two `dagster asset materialize` runs at once on the same instance, DuckDB file, checkpoint tree and
SQLite MLflow store, each with parallel steps (multiprocess executor): no lock errors, consistent results."""

import os
import shutil
import subprocess
import sys

from transformers import AutoTokenizer

from pipelines.definitions import PROJECT_ROOT, default_resources
from pipelines.profiles import SMOKE

SELECTION = "raw_problems,raw_training_data,eval_suites,training_problems,raw_corpus,sft_dataset,think_dataset,tokenizer"
LOCK_ERRORS = ("database is locked", "Could not set lock", "Conflicting lock", "DuckDBLockTimeout")
RUN_TIMEOUT_S = 900


def test_two_cli_runs_at_once_share_every_store_without_lock_errors(tmp_path):
    dagster_home, lineage_home = tmp_path / "dagster_home", tmp_path / "lineage"
    dagster_home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "LLM_LINEAGE_HOME": str(lineage_home),
           "LLM_LINEAGE_PROFILE": "smoke"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the default SQLite store: the one that needs the file lock
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    # `make setup` creates the instance's storage once; two first-ever runs racing to create it would
    # collide in Dagster's own schema migration (alembic), not in the lineage's stores.
    subprocess.run([dagster, "instance", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    command = [dagster, "asset", "materialize", "--select", SELECTION, "-m", "pipelines.definitions"]
    runs = [subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    logs = [run.communicate(timeout=RUN_TIMEOUT_S)[0] for run in runs]
    for run, log in zip(runs, logs):
        assert run.returncode == 0, log[-4000:]
        assert not [error for error in LOCK_ERRORS if error in log], log[-4000:]
        assert "RUN_SUCCESS" in log

    resources = default_resources(lineage_home, profile="smoke")
    duckdb = resources["duckdb"]
    assert duckdb.count("raw_problems") == SMOKE.data.n_problems
    train = duckdb.query("SELECT count(*) AS n FROM raw_problems WHERE split = 'train'")[0]["n"]
    kept = duckdb.count("training_problems")
    assert kept + duckdb.count("contamination_report") == train
    assert duckdb.count("sft_dataset") == duckdb.count("think_dataset") == duckdb.count("raw_corpus") == kept
    tokenizer_runs = resources["mlflow"].runs()
    assert 1 <= len(tokenizer_runs) <= 2 and all(r.info.status == "FINISHED" for r in tokenizer_runs)
    AutoTokenizer.from_pretrained(resources["checkpoints"].current("tokenizer"))  # complete, loadable
    assert not list((lineage_home / "checkpoints" / "tokenizer").glob(".staging-*"))
