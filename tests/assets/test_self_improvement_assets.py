"""Self-improvement rounds as lineage: the loop is closed (round k trains on exactly the verified samples of round
k−1's checkpoint, none of them an eval item), the audit walks it, and a round that did not help stops the next."""

import os
import shutil
import subprocess
import sys
from unittest import mock

import dagster as dg
import duckdb
import pytest

from assets.self_improvement import _prompt_split, build_rounds
from pipelines.data.problems import normalize_question
from pipelines.data.self_improvement import STOPPED, VERIFIER_VERSION
from pipelines.definitions import PROJECT_ROOT, all_assets, default_resources
from pipelines.training.checkpoint_record import read_record
from resources.checkpoint_store import verify_checkpoint


def _query(path, sql: str, parameters=()) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as connection:
        return connection.execute(sql, list(parameters)).fetchall()


def test_round_1_trains_on_exactly_the_verified_samples_of_round_0(materialized_lineage):
    database = materialized_lineage.lineage_home / "lineage.duckdb"
    checkpoints = materialized_lineage.resources["checkpoints"]
    round_0, round_1 = checkpoints.current("reasoning_checkpoint").name, checkpoints.current(
        "reasoning_round_1_checkpoint").name
    trained = _query(database, "SELECT sample_id, trained_checkpoint FROM self_improvement_training_rows "
                               "WHERE round = 1 ORDER BY sample_id")
    verified = _query(database, "SELECT sample_id FROM self_improvement_samples WHERE round = 1 AND status = 'kept' "
                                "AND sampled_checkpoint = ? ORDER BY sample_id", [round_0])
    assert trained and [sample for sample, _ in trained] == [sample for (sample,) in verified]
    assert {checkpoint for _, checkpoint in trained} == {round_1}
    # every trained sample was sampled from round 0's checkpoint, right by the verifier, and is no eval item
    joined = _query(database, "SELECT s.status, s.sampled_checkpoint, s.predicted = s.label, s.prompt, s.problem_id "
                              "FROM self_improvement_training_rows t JOIN self_improvement_samples s USING (sample_id) "
                              "WHERE t.round = 1")
    assert len(joined) == len(trained) and {row[:3] for row in joined} == {("kept", round_0, True)}
    eval_items = _query(database, "SELECT question, problem_id FROM eval_suites")
    questions, eval_ids = {normalize_question(q) for q, _ in eval_items}, {p for _, p in eval_items}
    assert not {normalize_question(prompt) for *_, prompt, _ in joined} & questions
    assert not {problem for *_, problem in joined} & eval_ids
    # the rows that were not kept are stored with their reason, not dropped
    statuses = dict(_query(database, "SELECT status, count(*) FROM self_improvement_samples WHERE round = 1 GROUP BY 1"))
    rounds = _query(database, "SELECT sampled, kept, verifier FROM self_improvement_rounds WHERE round = 1")
    assert rounds == [(sum(statuses.values()), statuses["kept"], VERIFIER_VERSION)]


def test_lineage_back_from_a_round_names_the_sampled_checkpoint_and_the_verifier(materialized_lineage):
    env = {**os.environ, "DAGSTER_HOME": str(materialized_lineage.dagster_home)}
    back = subprocess.run([sys.executable, "-m", "pipelines.lineage", "back", "reasoning_round_1_checkpoint"],
                          env=env, capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT)
    assert back.returncode == 0, back.stderr
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in back.stdout.splitlines()[2:]]
    by_asset = {cells[1]: cells for cells in rows}
    sampled = materialized_lineage.resources["checkpoints"].current("reasoning_checkpoint")
    assert by_asset["reasoning_checkpoint"][2] == sampled.name  # the checkpoint round 1 sampled, at its version
    assert VERIFIER_VERSION in by_asset["reasoning_round_1_samples"][7]  # the samples' code version names the verifier


@pytest.fixture
def two_rounds_home(materialized_lineage, tmp_path):
    """A copy of the smoke lineage's data (every upstream step reuses it) and a fresh Dagster instance."""
    home = tmp_path / "lineage"
    shutil.copytree(materialized_lineage.lineage_home, home, symlinks=True)
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    return home, dagster_home, materialized_lineage.tracking_uri


def test_a_round_that_does_not_improve_stops_the_next_one(two_rounds_home):
    home, dagster_home, tracking_uri = two_rounds_home
    rounds, by_round = build_rounds(2)
    upstream = [a for a in all_assets if isinstance(a, dg.AssetsDefinition)
                and {spec.group_name for spec in a.specs} <= {"raw", "datasets", "checkpoints"}]
    resources = default_resources(home, profile="smoke", tracking_uri=tracking_uri)
    definitions = dg.Definitions(assets=upstream + rounds, resources=resources)
    job = definitions.resolve_implicit_global_asset_job_def()
    # round 2 demands a gain round 1 cannot make: it must stop, sample nothing and carry the best weights
    # round 1 samples with its own seed: the held-out validation split must not move with it
    config = {"ops": {"reasoning_round_1_samples": {"config": {"seed": 7, "prompts": 200}},
                      "reasoning_round_2_samples": {"config": {"min_improvement": 1.0}}}}
    with mock.patch.dict(os.environ, {"DAGSTER_HOME": str(dagster_home)}), \
            dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        result = job.execute_in_process(instance=instance, run_config=config)
    assert result.success
    checkpoints = resources["checkpoints"]
    round_1 = read_record(checkpoints.current("reasoning_round_1_checkpoint"))
    stopped = read_record(checkpoints.current("reasoning_round_2_checkpoint"))
    assert "less than min_improvement 1.0" in stopped[STOPPED]["reason"]
    evaluation = round_1["evaluation"]
    best = "reasoning_round_1_checkpoint" if evaluation["validation_pass_at_1"] >= \
        evaluation["start_validation_pass_at_1"] else "reasoning_checkpoint"
    assert stopped[STOPPED]["weights_of"] == f"{best}@{checkpoints.current(best).name}"
    carried = checkpoints.current("reasoning_round_2_checkpoint")
    verify_checkpoint(carried, "reasoning_round_2_checkpoint")
    assert (carried / "model.safetensors").read_bytes() == (checkpoints.current(best) / "model.safetensors").read_bytes()
    database = home / "lineage.duckdb"
    assert _query(database, "SELECT count(*) FROM self_improvement_samples WHERE round = 2") == [(0,)]
    assert _query(database, "SELECT stopped FROM self_improvement_rounds WHERE round = 2") == [(True,)]
    validation, _ = _prompt_split(resources["duckdb"], resources["profile"])  # the store's connection from here on
    sampled = {r["problem_id"] for r in resources["duckdb"].query(
        "SELECT DISTINCT problem_id FROM self_improvement_samples WHERE round = 1")}
    assert sampled and validation and not sampled & {r["problem_id"] for r in validation}
    events = {e.asset_key.to_user_string(): e for e in result.get_asset_materialization_events()}
    assert events["reasoning_round_2_samples"].materialization.metadata["stopped"].value is True
    assert by_round[-1].key.to_user_string() == "reasoning_round_2_checkpoint"
