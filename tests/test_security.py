"""Security defaults: configured paths confined to the data roots, remote code off unless opted in,
secrets only from the environment and never recorded, UIs on loopback."""

import os
import re

import dagster as dg
import pytest

from assets.checkpoints import base_checkpoint
from assets.datasets import eval_suites, raw_corpus, training_problems
from assets.raw import raw_problems
from assets.checkpoints import tokenizer
from pipelines.definitions import PROJECT_ROOT, default_resources
from pipelines.paths import DATA_ROOTS_ENV, PathOutsideDataRoots, confine, data_roots
from pipelines.training.recipes import import_base

SECRET = "tok-3f9a1c77-never-log-me"


def test_paths_inside_the_roots_resolve(tmp_path):
    assert confine("data/gsm8k/train.jsonl", "jsonl_paths[0]") == PROJECT_ROOT / "data" / "gsm8k" / "train.jsonl"
    assert confine("README.md", "f") == PROJECT_ROOT / "README.md"  # relative: from the repository root
    assert confine(tmp_path / "x.jsonl", "f", roots=[tmp_path]) == (tmp_path / "x.jsonl").resolve()


@pytest.mark.parametrize("path", ["/etc/passwd", "../../../../etc/passwd", "var/../../../etc", "~/.ssh/id_rsa"])
def test_paths_outside_the_roots_are_rejected_naming_the_field(path):
    with pytest.raises(PathOutsideDataRoots, match=r"jsonl_paths\[0\]: .*outside the data roots"):
        confine(path, "jsonl_paths[0]", roots=[PROJECT_ROOT])


def test_a_folder_beside_the_repository_is_not_a_default_root():
    """The datasets live in the repository's data/; a folder beside the checkout needs
    LLM_LINEAGE_DATA_ROOTS like any other directory."""
    assert confine("data/gsm8k/test.jsonl", "extra_suites[gsm8k].path").is_file()  # bundled, no download
    with pytest.raises(PathOutsideDataRoots, match=r"jsonl_paths\[0\]: .*outside the data roots"):
        confine("../datasets-beside-the-checkout/gsm8k/train.jsonl", "jsonl_paths[0]")


def test_a_symlink_out_of_a_root_is_rejected(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "escape").symlink_to("/etc")
    with pytest.raises(PathOutsideDataRoots, match="resolves to /etc/passwd"):
        confine(root / "escape" / "passwd", "path", roots=[root])


def test_extra_roots_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ROOTS_ENV, os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]))
    assert {tmp_path / "a", tmp_path / "b"} <= set(data_roots())
    assert confine(tmp_path / "b" / "f.jsonl", "f") == tmp_path / "b" / "f.jsonl"
    monkeypatch.delenv(DATA_ROOTS_ENV)
    with pytest.raises(PathOutsideDataRoots):
        confine(tmp_path / "b" / "f.jsonl", "f")


def _step_error(result):
    error = result.get_step_failure_events()[0].step_failure_data.error
    return error.cause or error


def test_raw_problems_refuses_a_path_outside_the_roots(lineage_home):
    resources = default_resources(lineage_home, profile="smoke", tracking_uri="sqlite:///unused.db")
    config = {"ops": {"raw_problems": {"config": {"source": "jsonl", "jsonl_paths": ["/etc/passwd"]}}}}
    result = dg.materialize([raw_problems], resources=resources, run_config=config, raise_on_error=False)
    assert not result.success
    failure = _step_error(result)
    assert failure.cls_name == "PathOutsideDataRoots" and "jsonl_paths[0]: '/etc/passwd'" in failure.message
    assert "raw_problems" not in resources["duckdb"].tables()


def test_base_model_directory_outside_the_roots_is_refused(lineage_home):
    resources = default_resources(lineage_home, profile="smoke", tracking_uri="sqlite:///unused.db")
    config = {"ops": {"base_checkpoint": {"config": {"base_model": "../../../usr/lib"}}}}
    result = dg.materialize([base_checkpoint], resources=resources, run_config=config, raise_on_error=False,
                            selection=[base_checkpoint.key])
    failure = _step_error(result)
    assert "base_model: '../../../usr/lib'" in failure.message


def _model_with_remote_code(directory, marker):
    directory.mkdir()
    (directory / "config.json").write_text(
        '{"model_type": "marker_model", "auto_map": {"AutoConfig": "configuration_marker.MarkerConfig", '
        '"AutoModelForCausalLM": "configuration_marker.MarkerConfig"}}')
    (directory / "configuration_marker.py").write_text(
        f"open({str(marker)!r}, 'w').write('remote code ran')\n"
        "from transformers import PretrainedConfig\n"
        "class MarkerConfig(PretrainedConfig):\n    model_type = 'marker_model'\n")


def test_remote_code_is_not_run_unless_opted_in(tmp_path):
    marker = tmp_path / "remote_code_ran"
    _model_with_remote_code(tmp_path / "model", marker)
    with pytest.raises(ValueError, match="trust_remote_code"):
        import_base(str(tmp_path / "model"), tmp_path / "out")
    assert not marker.exists()


def test_trust_remote_code_defaults_off_in_the_asset_config():
    from assets.checkpoints import BaseConfig

    assert BaseConfig().trust_remote_code is False


def test_mlflow_secret_comes_from_the_environment_and_is_never_recorded(monkeypatch, lineage_home, mlflow_server):
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", SECRET)
    resources = default_resources(lineage_home, profile="smoke", tracking_uri=mlflow_server)
    assert isinstance(resources["mlflow"].tracking_token, dg.EnvVar)  # a reference, not the value
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([raw_problems, eval_suites, training_problems, raw_corpus, tokenizer], resources=resources, instance=instance)
    assert result.success
    # the token reached MLflow's client (sent as a bearer token to the server) ...
    client = resources["mlflow"].client()
    assert client._tracking_client.store.get_host_creds().token == SECRET
    # ... but no event, log line, metadata value or run config of the run contains it
    records = instance.all_logs(result.run_id)
    assert records and not [r for r in records if SECRET in dg.serialize_value(r)]
    assert SECRET not in dg.serialize_value(instance.get_run_by_id(result.run_id).run_config)
    runs = resources["mlflow"].runs(f"tags.`dagster.run_id` = '{result.run_id}'")
    assert runs and all(SECRET not in str(r.data.params) + str(r.data.tags) for r in runs)


def test_make_ui_binds_both_uis_to_loopback():
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    ui_recipe = makefile.split("\nui:")[1].split("\n\n")[0]
    assert re.search(r"mlflow ui .*--host 127\.0\.0\.1", ui_recipe)
    assert re.search(r"pipelines\.runtime\.ui_proxy .*--host 127\.0\.0\.1", ui_recipe)  # it runs `dagster dev`
    assert "0.0.0.0" not in makefile


def test_ui_servers_default_to_loopback():
    """Started without a host, neither server listens beyond this machine."""
    from dagster_webserver.cli import cli as webserver_cli
    from mlflow.cli import server as mlflow_server_cli

    for command in (webserver_cli, mlflow_server_cli):
        assert [p.default for p in command.params if p.name == "host"] == ["127.0.0.1"], command.name
