"""eval_scores in MLflow and Dagster: one summary table and pass@k curves, not 36 one-bar charts. The
real asset grades stored generations (two variants, three suites) and logs to a real MLflow server."""

import json

import dagster as dg

from assets.evals import eval_scores
from pipelines.definitions import default_resources
from pipelines.evaluation.summary import SUMMARY_TABLE, metric_points, summary_rows
from tests.conftest import reconfigured
from tests.pipelines.test_scoring_and_report import _generations

GRADERS = 4  # strict, flexible, exact, math_verify
SUITES = ("in_distribution", "perturbed", "domain_shift")


def test_eval_scores_logs_one_table_and_pass_at_k_curves(tmp_path, mlflow_server):
    resources = default_resources(tmp_path / "home", profile="smoke", tracking_uri=mlflow_server)
    resources["mlflow"] = reconfigured(resources["mlflow"], experiment_name="eval-scores-summary")
    generations = [{**row, "eval_fingerprint": f"gen-{row['variant']}", "model_version": "v1"}
                   for row in _generations()]
    resources["duckdb"].replace_table("eval_generations", generations)
    resources["duckdb"].replace_table("eval_suites", [
        {"suite": "perturbed", "problem_id": p, "original_problem_id": p, "perturbation": "numbers"}
        for p in ("p1", "p2")])
    result = dg.materialize([eval_scores], resources=resources)
    assert result.success
    [run] = resources["mlflow"].runs(f"tags.`dagster.run_id` = '{result.run_id}'")
    client = resources["mlflow"].client()

    # a few headline scalars and one pass@k curve per variant and suite; no metric per grader
    curves = {f"pass_at_k/{variant}/{suite}" for variant in ("base", "reasoning") for suite in SUITES}
    assert set(run.data.metrics) == curves | {"pass_at_1/base", "pass_at_1/reasoning"}
    history = client.get_metric_history(run.info.run_id, "pass_at_k/reasoning/in_distribution")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.75), (2, 1.0)]  # k = 1, 2 samples
    assert run.data.metrics["pass_at_1/base"] == 0.5  # the confidence-selected CoT branch

    # the whole grid as one table artifact: a row per variant, suite and grader
    assert {"path": SUMMARY_TABLE, "type": "table"} in json.loads(run.data.tags["mlflow.loggedArtifacts"])
    table = json.loads(open(client.download_artifacts(run.info.run_id, SUMMARY_TABLE, str(tmp_path))).read())
    rows = [dict(zip(table["columns"], values)) for values in table["data"]]
    assert len(rows) == 2 * len(SUITES) * GRADERS
    assert {(r["variant"], r["suite"], r["grader"]) for r in rows} == {
        (v, s, g) for v in ("base", "reasoning") for s in SUITES for g in ("strict", "flexible", "exact", "math_verify")}
    assert rows[0] == {  # base first, in-distribution first, the suite's primary grader first
        "variant": "base", "suite": "in_distribution", "grader": "exact", "primary": True, "decoding": "cot",
        "few_shot": 0, "k": 2, "pass_at_1": 0.5, "pass_at_k": 1.0, "maj_at_k": 0.5, "greedy_pass_at_1": 0.5,
        "mean_output_tokens": 10.0, "mean_thinking_tokens": 0.0}

    # Dagster shows the same table
    summary = result.asset_materializations_for_node("eval_scores")[0].metadata["summary"]
    assert isinstance(summary, dg.TableMetadataValue) and len(summary.records) == len(rows)
    assert summary.records[0].data == rows[0]
    assert [column.name for column in summary.schema.columns] == table["columns"]


def test_curves_and_headlines_follow_each_suites_primary_grader():
    """A math suite is reported with math-verify (scoring.mark_primary): its curve is that grader's."""
    def row(grader, primary, curve):
        return {"variant": "reasoning", "suite": "in_distribution", "grader": grader, "primary": primary,
                "pass_at_1": curve[0], "pass_at_k_curve": json.dumps(curve)}

    scores = [row("exact", False, [0.1, 0.2]), row("math_verify", True, [0.5, 0.7])]
    assert metric_points(scores) == [("pass_at_k/reasoning/in_distribution", 1, 0.5),
                                     ("pass_at_k/reasoning/in_distribution", 2, 0.7), ("pass_at_1/reasoning", 0, 0.5)]
    assert [r["grader"] for r in summary_rows(scores)] == ["math_verify", "exact"]


def test_a_suites_relative_tolerance_reaches_the_exact_grader(tmp_path):
    """``rel_tol`` on a number suite was stored per item and honoured by the grader, but eval_scores graded
    without it: 100.5 against gold 100 stayed wrong at 1%. Changing the tolerance re-grades (new fingerprint)."""
    from tests.pipelines.test_scoring_and_report import _row

    home = tmp_path / "home"
    resources = default_resources(home, profile="smoke", tracking_uri=f"sqlite:///{home}/mlflow.db")
    store = resources["duckdb"]
    store.replace_table("eval_generations", [{**_row("instruct", "prices", "p1", 0, "The answer is 100.5.", "100",
                                                     "sample"), "eval_fingerprint": "gen", "model_version": "v1"}])

    def exact_pass_at_1(rel_tol):
        store.replace_table("eval_suites", [{"suite": "prices", "problem_id": "p1", "answer_type": "number",
                                             "rel_tol": rel_tol, "perturbation": None, "original_problem_id": None}])
        assert dg.materialize([eval_scores], resources=resources).success
        [row] = store.query("SELECT pass_at_1 FROM eval_scores WHERE grader = 'exact'")
        return row["pass_at_1"]

    assert exact_pass_at_1(0.01) == 1.0
    assert exact_pass_at_1(None) == 0.0
