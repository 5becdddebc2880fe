"""The instance's step log capture: the files the UI reads, and the same text still on the terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.definitions import PROJECT_ROOT

RUN_WITH_TEE_CAPTURE = """
import subprocess, sys
import dagster as dg
from dagster._core.storage.compute_log_manager import ComputeIOType

@dg.asset
def talkative() -> None:
    print("printed by python")
    sys.stderr.write("written to stderr\\n")
    subprocess.run(["echo", "echoed by a child process"], check=True)

with dg.instance_for_test(overrides={"compute_logs": {
        "module": "pipelines.compute_logs", "class": "TeeComputeLogManager",
        "config": {"base_dir": sys.argv[1]}}}) as instance:
    result = dg.materialize([talkative], instance=instance)
    assert result.success
    manager = instance.compute_log_manager
    [captured] = [e for e in instance.all_logs(result.run_id) if e.dagster_event and
                  e.dagster_event.event_type_value == "LOGS_CAPTURED"]
    log_key = manager.build_log_key_for_run(result.run_id, captured.dagster_event.logs_captured_data.file_key)
    data = manager.get_log_data(log_key)
    print("UI-STDOUT", repr(data.stdout.decode()), file=sys.__stderr__)
    print("UI-STDERR", repr(data.stderr.decode()), file=sys.__stderr__)
    print("COMPLETE", manager.is_capture_complete(log_key), type(manager).__name__, file=sys.__stderr__)
"""


def test_a_steps_output_reaches_the_captured_files_and_the_terminal(tmp_path):
    completed = subprocess.run([sys.executable, "-c", RUN_WITH_TEE_CAPTURE, str(tmp_path / "logs")],
                               cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in completed.stderr.splitlines()
              if line.startswith(("UI-STDOUT", "UI-STDERR", "COMPLETE"))}
    assert "printed by python" in report["UI-STDOUT"] and "echoed by a child process" in report["UI-STDOUT"]
    assert "written to stderr" in report["UI-STDERR"]
    assert report["COMPLETE"] == "True TeeComputeLogManager"
    # the terminal copy: what the step wrote still reaches the process's own stdout and stderr
    assert "printed by python" in completed.stdout and "echoed by a child process" in completed.stdout
    assert "written to stderr" in completed.stderr


def test_without_base_dir_the_logs_go_where_dagster_keeps_them(tmp_path, monkeypatch):
    from pipelines.compute_logs import TeeComputeLogManager

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    manager = TeeComputeLogManager.from_config_value(None, {})
    assert Path(manager.get_captured_local_path(["run", "compute_logs", "step"], "out")).is_relative_to(
        tmp_path / "storage")
    monkeypatch.delenv("DAGSTER_HOME")
    homeless = TeeComputeLogManager.from_config_value(None, {})  # an instance that only reads events
    with pytest.raises(ValueError, match="needs base_dir or DAGSTER_HOME"):
        homeless.get_captured_local_path(["run", "compute_logs", "step"], "out")
