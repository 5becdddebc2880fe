"""dagster.yaml loads into a real instance with the pools, run retries, run monitoring and log capture it
promises."""

import os
import shutil
import subprocess
import sys

import dagster as dg
import yaml

from pipelines.definitions import PROJECT_ROOT


def _home_with_project_config(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def test_instance_from_dagster_yaml_has_pools_retries_and_monitoring(tmp_path, monkeypatch):
    home = _home_with_project_config(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.from_config(str(home))
    assert type(instance.compute_log_manager).__name__ == "LocalComputeLogManager"  # Dagster's stock one
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
    assert not instance.run_retries_retry_on_asset_or_op_failure
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_start_timeout_seconds == 180
    concurrency = instance.get_concurrency_config()
    assert concurrency.pool_config.default_pool_limit == 1
    assert concurrency.run_queue_config.max_concurrent_runs == 2
    # the training pool takes the default limit the first time it is used
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default("gpu")
    assert storage.get_concurrency_info("gpu").slot_count == 1


def test_dagster_yaml_names_no_project_code():
    """A webserver or daemon image without the project (a Helm deployment) must load the instance config:
    no class of this project in it, only Dagster's own."""
    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    modules = [value for section in config.values() if isinstance(section, dict)
               for key, value in section.items() if key == "module"]
    assert all(module.startswith("dagster") for module in modules), modules


def test_model_running_assets_use_the_limited_pool():
    from pipelines.definitions import all_assets

    pools = {key.to_user_string(): a.op.pool for a in all_assets if isinstance(a, dg.AssetsDefinition)
             for key in a.keys}
    training = {"base_checkpoint", "instruct_checkpoint", "think_sft_checkpoint", "reasoning_checkpoint",
                "reasoning_round_1_checkpoint"}  # a round also samples its validation prompts
    generating = {"eval_base", "eval_instruct", "eval_reasoning_round_0", "eval_reasoning",
                  "preference_dataset", "reasoning_round_1_samples"}
    assert {name for name, pool in pools.items() if pool == "gpu"} == training | generating


def test_dagster_cli_reads_the_instance_config(tmp_path):
    home = _home_with_project_config(tmp_path)
    completed = subprocess.run([os.path.join(os.path.dirname(sys.executable), "dagster"), "instance", "info"],
                               env={**os.environ, "DAGSTER_HOME": str(home)}, capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    shown = completed.stdout.split("Instance configuration:")[1].split("Storage schema state:")[0]
    shown = shown.split("\n", 2)[2]  # drop the underline
    config = yaml.safe_load(shown)
    assert config["run_retries"]["enabled"] is True
    assert config["run_monitoring"]["enabled"] is True
    assert config["concurrency"]["pools"]["default_limit"] == 1
