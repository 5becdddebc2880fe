"""Gating rules, and the registry flow against a real MLflow server (register, score, gate, promote)."""

import json

import pytest

from pipelines.evaluation.gating import GatedScores, GateSettings, evaluate_checkpoint, gate, suite_scores
from pipelines.evaluation.versioning import suites_fingerprint
from pipelines.promotion import STAND_IN_TAG, check_candidate, promote_candidate, register_candidate
from pipelines.registry import CHECKPOINT_ARTIFACT, ModelRegistry
from resources import MLflowTracking

SUITES = [{"suite": s, "problem_id": f"{s}-{i}", "question": f"q{i}", "answer": str(i)}
          for s in ("in_distribution", "perturbed") for i in range(3)]


def test_first_candidate_always_passes():
    verdict = gate({"in_distribution": 0.0}, None, tolerance=0.02)
    assert verdict.passed and "first candidate" in verdict.reason


def test_a_drop_beyond_tolerance_on_any_suite_fails_and_names_it():
    champion = {"in_distribution": 0.50, "perturbed": 0.40}
    assert gate({"in_distribution": 0.49, "perturbed": 0.41}, champion, tolerance=0.02).passed
    verdict = gate({"in_distribution": 0.60, "perturbed": 0.30}, champion, tolerance=0.02)
    assert not verdict.passed and "perturbed" in verdict.reason and "in_distribution" not in verdict.reason
    assert [r["regressed"] for r in verdict.rows] == [False, True]
    assert "| perturbed | 0.400 | 0.300 | -0.100 | yes |" in verdict.markdown()


def test_gate_needs_the_champions_suites_and_a_sane_tolerance():
    assert not gate({"in_distribution": 0.9}, {"in_distribution": 0.5, "perturbed": 0.5}, 0.02).passed
    with pytest.raises(ValueError, match="tolerance"):
        gate({}, None, tolerance=-0.1)


def test_suites_fingerprint_ignores_order_and_sees_content():
    assert suites_fingerprint(SUITES) == suites_fingerprint(list(reversed(SUITES)))
    changed = [dict(SUITES[0], answer="99"), *SUITES[1:]]
    assert suites_fingerprint(changed) != suites_fingerprint(SUITES)


def _scores(variant, version, values):
    return [{"variant": variant, "suite": suite, "grader": "exact", "pass_at_1": value, "model_version": version}
            for suite, value in values.items()]


def _checkpoint(tmp_path, version, weights=b"w", training_run=None):
    directory = tmp_path / "versions" / version
    directory.mkdir(parents=True)
    (directory / "model.safetensors").write_bytes(weights)
    if training_run is not None:  # lineage.json names the MLflow run that trained it, as build_checkpoint writes it
        (directory / "lineage.json").write_text(json.dumps({"fingerprint": version, "mlflow_run_id": training_run}))
    return directory


def test_register_gate_and_promote_through_a_real_registry(tmp_path, mlflow_server):
    tracking = MLflowTracking(tracking_uri=mlflow_server, experiment_name="gating-test")
    registry, name = ModelRegistry(mlflow_server), "gating-test-instruct"
    settings = GateSettings(tolerance=0.05)
    opened = []

    def open_run():
        opened.append(1)
        return tracking.start_run("candidate")

    assert registry.champion(name) is None and registry.find(name, "aaa111") is None  # no such model yet
    with tracking.start_run("train-good") as training:
        pass
    good = _checkpoint(tmp_path, "aaa111", b"good", training.run_id)
    first = register_candidate(registry, name, "instruct", good, _scores("instruct", "aaa111",
                               {"in_distribution": 0.6, "perturbed": 0.5}), SUITES, open_run)
    again = register_candidate(registry, name, "instruct", good, _scores("instruct", "aaa111",
                               {"in_distribution": 0.6, "perturbed": 0.5}), SUITES, open_run)
    assert first.version == again.version and not opened  # idempotent: one version, of the training run
    assert first.run_id == training.run_id and first.model_id is not None
    assert first.scores == {"in_distribution": 0.6, "perturbed": 0.5}
    never_called = lambda *_: pytest.fail("the champion needs no re-evaluation")  # noqa: E731

    with pytest.raises(PermissionError, match="has not passed the gate"):
        promote_candidate(registry, name, good)
    outcome = check_candidate(registry, name, good, SUITES, settings, never_called)
    assert outcome.verdict.passed and outcome.champion is None
    assert promote_candidate(registry, name, good)[0].version == first.version
    assert registry.champion(name).version == first.version

    worse = _checkpoint(tmp_path, "bbb222", b"worse", training_run="0" * 32)  # trained against another store
    stand_in = register_candidate(registry, name, "instruct", worse, _scores("instruct", "bbb222",
                                  {"in_distribution": 0.2, "perturbed": 0.5}), SUITES, open_run)
    assert len(opened) == 1 and stand_in.tags[STAND_IN_TAG] == "0" * 32 and stand_in.run_id != training.run_id
    outcome = check_candidate(registry, name, worse, SUITES, settings, never_called)
    assert not outcome.verdict.passed and "in_distribution" in outcome.verdict.reason
    with pytest.raises(PermissionError):
        promote_candidate(registry, name, worse)
    assert registry.champion(name).version == first.version  # the alias did not move

    # New suites: the champion's recorded scores no longer apply, so it is evaluated again from the registry.
    new_suites = SUITES + [{"suite": "perturbed", "problem_id": "extra", "question": "q", "answer": "1"}]
    register_candidate(registry, name, "instruct", worse, _scores("instruct", "bbb222",
                       {"in_distribution": 0.55, "perturbed": 0.5}), new_suites, open_run)
    seen = []

    def evaluate(model_dir, model_version):
        seen.append(((model_dir / "model.safetensors").read_bytes(), model_version))
        return GatedScores({"in_distribution": 0.58, "perturbed": 0.45}, {"in_distribution": "exact",
                                                                          "perturbed": "exact"})

    outcome = check_candidate(registry, name, worse, new_suites, settings, evaluate)
    assert seen == [(b"good", "aaa111")] and outcome.champion_reevaluated  # read where the logged model points
    assert outcome.verdict.passed and outcome.champion.scores == {"in_distribution": 0.58, "perturbed": 0.45}
    promote_candidate(registry, name, worse)
    assert registry.champion(name).checkpoint_version == "bbb222"
    assert not tracking.client().list_artifacts(training.run_id, CHECKPOINT_ARTIFACT)  # no copy of the weights


def test_scores_of_another_checkpoint_are_refused(tmp_path, mlflow_server):
    registry = ModelRegistry(mlflow_server)
    with pytest.raises(ValueError, match="re-materialize eval_instruct"):
        register_candidate(registry, "gating-test-stale", "instruct", _checkpoint(tmp_path, "new"),
                           _scores("instruct", "old", {"in_distribution": 0.5}), SUITES, None)


def test_versions_registered_before_logged_models_still_give_their_files(tmp_path, mlflow_server):
    """Registries from before logged models hold a copy of the files in the version's run: a champion
    from then is still read back for re-evaluation."""
    tracking, registry = MLflowTracking(tracking_uri=mlflow_server, experiment_name="gating-test"), \
        ModelRegistry(mlflow_server)
    checkpoint, client = _checkpoint(tmp_path, "old111", b"old"), tracking.client()
    with tracking.start_run("instruct_candidate") as run:
        client.log_artifacts(run.run_id, str(checkpoint), CHECKPOINT_ARTIFACT)
    client.create_registered_model("gating-test-legacy")
    client.create_model_version("gating-test-legacy", f"runs:/{run.run_id}/{CHECKPOINT_ARTIFACT}", run.run_id,
                                tags={"checkpoint_version": "old111"})
    files = registry.checkpoint_files(registry.find("gating-test-legacy", "old111"), tmp_path / "scratch")
    assert (files / "model.safetensors").read_bytes() == b"old"


def test_the_default_sqlite_store_registers_a_logged_model_of_the_training_run(tmp_path):
    """A SQLite registry resolves a ``models:/`` source through the process-wide tracking URI, not the
    client's: registration names the logged model's location instead, and works there too."""
    tracking = MLflowTracking(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "a"))
    with tracking.start_run("train") as training:
        pass
    checkpoint = _checkpoint(tmp_path, "ccc333", b"weights", training.run_id)
    version = register_candidate(tracking.registry(), "sqlite-instruct", "instruct", checkpoint,
                                 _scores("instruct", "ccc333", {"in_distribution": 0.5}), SUITES, None)
    assert version.run_id == training.run_id and version.model_id is not None
    assert tracking.client().get_logged_model(version.model_id).source_run_id == training.run_id
    assert tracking.registry().checkpoint_files(version, tmp_path / "scratch") == checkpoint


# Issue #17: each suite is gated on its primary grader (math-verify for a LaTeX-answer suite), headline rows only.
MATH_SUITES = SUITES + [{"suite": "math500", "problem_id": f"math500-{i}", "question": f"q{i}",
                         "answer": "\\frac{1}{2}", "answer_type": "math"} for i in range(3)]


def _graded(variant, version, exact, math_verify, extra=()):
    """Score rows as eval_scores stores them: every grader, ``primary`` marking each suite's own."""
    rows = [{"variant": variant, "suite": suite, "grader": grader, "pass_at_1": value, "model_version": version,
             "primary": grader == ("math_verify" if suite == "math500" else "exact")}
            for grader, values in (("exact", exact), ("math_verify", math_verify)) for suite, value in values.items()]
    return rows + [{"variant": variant, "model_version": version, **row} for row in extra]


def _sqlite(tmp_path):
    return MLflowTracking(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "a"))


def test_suite_scores_take_each_suites_primary_grader_in_the_headline_setting():
    rows = _graded("instruct", "v", exact={"in_distribution": 0.5, "math500": 0.0},
                   math_verify={"in_distribution": 0.9, "math500": 0.4})
    rows = [dict(r, headline=True) if r["suite"] == "math500" else r for r in rows]  # no flag counts as headline
    rows.append({"variant": "instruct", "suite": "math500", "grader": "math_verify", "pass_at_1": 1.0,
                 "model_version": "v", "primary": True, "headline": False})  # another few-shot setting: not gated
    assert suite_scores(rows, "instruct") == ({"in_distribution": 0.5, "math500": 0.4},
                                              {"in_distribution": "exact", "math500": "math_verify"})
    legacy = [{k: v for k, v in r.items() if k not in ("primary", "headline")} for r in rows[:4]]  # before the flag
    assert suite_scores(legacy, "instruct").graders == {"in_distribution": "exact", "math500": "exact"}
    nulls = [dict(r, primary=float("nan"), headline=float("nan")) for r in legacy]  # NULLs read through pandas
    assert suite_scores(nulls, "instruct").graders == {"in_distribution": "exact", "math500": "exact"}
    with pytest.raises(ValueError, match="several headline"):
        suite_scores(rows + [dict(rows[0], pass_at_1=0.1)], "instruct")
    with pytest.raises(ValueError, match="materialize eval_scores"):
        suite_scores(rows, "reasoning")


def test_a_math_suite_is_gated_on_math_verify_not_exact(tmp_path):
    """``exact`` reads nothing from LaTeX answers (0 for both): only math-verify sees the candidate drop."""
    tracking = _sqlite(tmp_path)
    registry, name = tracking.registry(), "primary-instruct"
    with tracking.start_run("train") as training:
        pass
    exact = {"in_distribution": 0.5, "perturbed": 0.4, "math500": 0.0}
    champion_dir = _checkpoint(tmp_path, "champ1", b"c", training.run_id)
    champion = register_candidate(registry, name, "instruct", champion_dir,
                                  _graded("instruct", "champ1", exact, {**exact, "math500": 0.6}), MATH_SUITES, None)
    assert champion.scores == {**exact, "math500": 0.6}
    assert champion.graders == {"in_distribution": "exact", "perturbed": "exact", "math500": "math_verify"}
    never_called = lambda *_: pytest.fail("the champion needs no re-evaluation")  # noqa: E731
    assert check_candidate(registry, name, champion_dir, MATH_SUITES, GateSettings(), never_called).verdict.passed
    promote_candidate(registry, name, champion_dir)

    worse = _checkpoint(tmp_path, "cand2", b"w", training.run_id)
    register_candidate(registry, name, "instruct", worse,
                       _graded("instruct", "cand2", exact, {**exact, "math500": 0.1}), MATH_SUITES, None)
    outcome = check_candidate(registry, name, worse, MATH_SUITES, GateSettings(), never_called)
    assert not outcome.verdict.passed and "math500" in outcome.verdict.reason
    assert outcome.verdict.graders["math500"] == "math_verify"
    assert {r["suite"]: r["grader"] for r in outcome.verdict.rows}["math500"] == "math_verify"
    assert "| math500 | 0.600 | 0.100 | -0.500 | yes | math_verify |" in outcome.verdict.markdown()


def test_a_champion_scored_under_other_graders_is_evaluated_again(tmp_path):
    """A champion registered when every suite was gated on ``exact`` (no graders recorded) is re-scored
    under the primary graders before the comparison."""
    tracking = _sqlite(tmp_path)
    registry, name = tracking.registry(), "legacy-instruct"
    with tracking.start_run("train") as training:
        pass
    old_dir = _checkpoint(tmp_path, "old1", b"old", training.run_id)
    old = registry.register(name, old_dir, training.run_id, "old1")
    registry.record_scores(old, suites_fingerprint(MATH_SUITES), {"in_distribution": 0.5, "math500": 0.0})
    registry.promote(old)
    assert registry.champion(name).graders is None

    new_dir = _checkpoint(tmp_path, "new2", b"new", training.run_id)
    register_candidate(registry, name, "instruct", new_dir, _graded("instruct", "new2", {"in_distribution": 0.5,
                       "math500": 0.0}, {"in_distribution": 0.5, "math500": 0.3}), MATH_SUITES, None)
    seen = []

    def evaluate(model_dir, model_version):
        seen.append(model_version)
        return GatedScores({"in_distribution": 0.5, "math500": 0.7}, {"in_distribution": "exact",
                                                                      "math500": "math_verify"})

    outcome = check_candidate(registry, name, new_dir, MATH_SUITES, GateSettings(), evaluate)
    assert seen == ["old1"] and outcome.champion_reevaluated
    assert outcome.champion.graders == {"in_distribution": "exact", "math500": "math_verify"}
    assert not outcome.verdict.passed and "math500" in outcome.verdict.reason  # 0.3 < 0.7 under math-verify


def test_gate_refuses_scores_under_different_graders():
    verdict = gate({"math500": 0.5}, {"math500": 0.1}, 0.02, {"math500": "math_verify"}, {"math500": "exact"})
    assert not verdict.passed and "different graders" in verdict.reason


def test_evaluate_checkpoint_scores_each_suite_under_its_primary_grader(monkeypatch, tmp_path):
    """The champion's re-evaluation marks primary graders from the suites' ``answer_type`` (missing: number)."""
    suites = [{"suite": "in_distribution", "problem_id": "a", "question": "q", "answer": "3", "rel_tol": 0.01},
              {"suite": "math500", "problem_id": "m", "question": "q", "answer": "\\frac{1}{2}", "answer_type": "math"}]
    outputs = {"in_distribution": "#### 3.01", "math500": "The answer is \\boxed{\\dfrac12}"}

    def generate(variant, model_dir, suite_rows, decoding, model_version):
        return [{"sample_id": f"{r['suite']}-0", "variant": variant, "suite": r["suite"], "problem_id": r["problem_id"],
                 "sample_index": 0, "output": outputs[r["suite"]], "gold": r["answer"], "model_version": model_version,
                 "decoding": json.dumps({"method": "sample"}), "output_tokens": 4, "thinking_tokens": 0,
                 "answer_tokens": 4, "seconds": 0.1} for r in suite_rows]

    monkeypatch.setattr("pipelines.evaluation.gating.generate_samples", generate)
    scores, graders = evaluate_checkpoint("instruct", tmp_path, suites, None, "v1", workers=1)
    assert graders == {"in_distribution": "exact", "math500": "math_verify"}
    assert scores == {"in_distribution": 1.0, "math500": 1.0}  # 3.01 within rel_tol; exact reads nothing from \dfrac12
