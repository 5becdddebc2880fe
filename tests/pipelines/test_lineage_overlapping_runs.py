"""Two overlapping runs: each lineage edge names the upstream version the step actually consumed.

Run A builds ``upstream_table`` v1 and starts ``downstream_report``, which reads v1 and is then held;
meanwhile run B builds ``upstream_table`` v2; then A's step finishes. The audit used to record the
newest upstream version at write time, so A's report was attributed to v2, which it never read.
The lineage now follows Dagster's ``dagster/input_event_pointer`` tags (the event consumed at step start).
"""

import hashlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from assets._lineage import recorded
from pipelines.lineage import PROJECT_ROOT, downstream_of_file, upstream

HOLD_TIMEOUT_S = 60


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assets(state: Path) -> list[dg.AssetsDefinition]:
    """``upstream_table`` publishes the value file's content; ``downstream_report`` reads the published value
    when it starts, then waits for ``release`` before it finishes, and names what it read in its data version."""
    value, published = state / "value.txt", state / "published.txt"

    @dg.asset
    def upstream_table() -> dg.MaterializeResult:
        content = value.read_text()
        published.write_text(content)
        return recorded(dg.MaterializeResult(data_version=dg.DataVersion(content)),
                        sources=[{"path": str(value.resolve()), "sha256": _sha256(value), "rows": 1}])

    @dg.asset(deps=[upstream_table])
    def downstream_report() -> dg.MaterializeResult:
        read = published.read_text()
        (state / "started").touch()
        deadline = time.monotonic() + HOLD_TIMEOUT_S
        while not (state / "release").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("never released")
            time.sleep(0.05)
        return recorded(dg.MaterializeResult(data_version=dg.DataVersion(f"built-from-{read}")))

    return [upstream_table, downstream_report]


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + HOLD_TIMEOUT_S
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def overlapped(tmp_path_factory):
    """Runs A (held in downstream_report), B (upstream only, while A is held), then C (downstream again); once for
    the module (~60 s), since the tests only read the instance."""
    root = tmp_path_factory.mktemp("overlapped")
    state, home = root / "state", root / "dagster_home"
    state.mkdir(), home.mkdir()
    assets = _assets(state)
    value = state / "value.txt"
    value.write_text("v1")
    v1_sha = _sha256(value)
    results = {}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run_a = threading.Thread(target=lambda: results.update(a=dg.materialize(assets, instance=instance)))
        run_a.start()
        _wait_for(state / "started")  # A consumed upstream_table v1 and is held
        value.write_text("v2")
        results["b"] = dg.materialize(assets, selection=["upstream_table"], instance=instance)
        (state / "release").touch()
        run_a.join(HOLD_TIMEOUT_S)
        results["c"] = dg.materialize(assets, selection=["downstream_report"], instance=instance)
        assert all(result.success for result in results.values())
        yield instance, results, home, value, v1_sha


def test_each_edge_names_the_version_the_step_consumed(overlapped):
    instance, results, _, _, _ = overlapped
    a, b, c = (results[k].run_id for k in "abc")
    # A's report read v1; B's v2 was materialized before A's report was
    a_report = upstream(instance, "downstream_report", "built-from-v1")
    assert [(r["asset"], r["data_version"], r["dagster_run_id"]) for r in a_report] == [
        ("downstream_report", "built-from-v1", a), ("upstream_table", "v1", a)]
    assert a_report[0]["inputs"] == {"upstream_table": "v1"}
    newest = upstream(instance, "downstream_report")
    assert [(r["asset"], r["data_version"], r["dagster_run_id"]) for r in newest] == [
        ("downstream_report", "built-from-v2", c), ("upstream_table", "v2", b)]
    assert all(r["git_commit"] and r["config_hash"] and r["code_version"] for r in a_report)


def test_forward_from_the_first_file_content_reaches_only_what_read_it(overlapped):
    instance, results, _, value, v1_sha = overlapped
    first = downstream_of_file(instance, str(value), v1_sha[:8])
    assert [(r["asset"], r["data_version"]) for r in first] == [
        ("upstream_table", "v1"), ("downstream_report", "built-from-v1")]
    everything = downstream_of_file(instance, str(value))
    assert {r["data_version"] for r in everything if r["asset"] == "downstream_report"} == {
        "built-from-v1", "built-from-v2"}


def test_the_command_reads_the_instance_named_and_says_when_there_is_none(overlapped, tmp_path):
    _, results, home, _, _ = overlapped
    command = [sys.executable, "-m", "pipelines.lineage", "back", "downstream_report", "--version", "built-from-v1"]
    back = subprocess.run([*command, "--json", "--dagster-home", str(home)], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert back.returncode == 0, back.stderr
    rows = [json.loads(line) for line in back.stdout.splitlines()]
    assert [(r["asset"], r["data_version"], r["dagster_run_id"]) for r in rows] == [
        ("downstream_report", "built-from-v1", results["a"].run_id), ("upstream_table", "v1", results["a"].run_id)]
    nowhere = subprocess.run([*command, "--dagster-home", str(tmp_path / "nowhere")], cwd=PROJECT_ROOT,
                             capture_output=True, text=True, timeout=120)
    assert nowhere.returncode == 2 and "no Dagster instance at" in nowhere.stderr
    missing = subprocess.run([sys.executable, "-m", "pipelines.lineage", "back", "never_built", "--dagster-home",
                              str(home)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "no materialization of asset 'never_built'" in missing.stderr
