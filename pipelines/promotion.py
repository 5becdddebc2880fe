"""Register a checkpoint as a candidate, gate it against the champion, promote it: the steps behind
the ``<variant>_candidate`` / ``<variant>_champion`` assets and their blocking check.

Each suite is gated on its primary grader (``gating.suite_scores``); the graders are recorded with the
scores, so a champion scored under other graders (e.g. before primary graders, when every suite was
gated on ``exact``) is evaluated again, like one scored on other suites."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from pipelines.evaluation.gating import GatedScores, GateSettings, GateVerdict, gate, legacy_graders, suite_scores
from pipelines.evaluation.versioning import suites_fingerprint
from pipelines.registry import GATE_TAG, PUBLISHED_PREFIX, ModelRegistry, RegisteredVersion, published_model_name
from pipelines.training.checkpoint_record import read_record

STAND_IN_TAG = "llm_lineage.training_run_not_in_store"  # the training run id a stand-in run replaces


@dataclass(frozen=True)
class GateOutcome:
    verdict: GateVerdict
    candidate: RegisteredVersion
    champion: RegisteredVersion | None
    champion_reevaluated: bool


def candidate_scores(score_rows: list[dict], variant: str, checkpoint_version: str) -> GatedScores:
    """The variant's pass@1 per suite under each suite's primary grader (headline rows), refusing scores
    that belong to another checkpoint."""
    versions = {r["model_version"] for r in score_rows if r["variant"] == variant}
    if versions and versions != {checkpoint_version}:
        raise ValueError(f"eval_scores for '{variant}' are for checkpoint {sorted(versions)}, not the current "
                         f"{checkpoint_version}: re-materialize eval_{variant} and eval_scores first")
    return suite_scores(score_rows, variant)


def register_candidate(registry: ModelRegistry, name: str, variant: str, checkpoint_dir: Path,
                       score_rows: list[dict], suite_rows: list[dict],
                       open_run: Callable[[], AbstractContextManager], tags: dict[str, str] | None = None,
                       description: str | None = None, model_name: str | None = None) -> RegisteredVersion:
    """The checkpoint as a model version (registered only the first time), with its scores: per suite,
    pass@1 under the suite's primary grader, and which grader that is.

    The version is a logged model (named ``model_name``) of the run that trained the checkpoint, which
    its ``lineage.json`` names. Only a checkpoint whose training run this tracking store lacks (trained
    against another store) is registered from a stand-in run opened with ``open_run``.
    """
    checkpoint_version = checkpoint_dir.name
    scores, graders = candidate_scores(score_rows, variant, checkpoint_version)
    version = registry.find(name, checkpoint_version)
    if version is None:
        tags = {"variant": variant, **(tags or {})}
        training_run = read_record(checkpoint_dir).get("mlflow_run_id")
        if training_run and registry.has_run(training_run):
            version = registry.register(name, checkpoint_dir, training_run, checkpoint_version, tags, description,
                                        model_name)
        else:
            with open_run() as run:
                version = registry.register(name, checkpoint_dir, run.run_id, checkpoint_version,
                                            tags | {STAND_IN_TAG: training_run or "none"}, description, model_name)
    return registry.record_scores(version, suites_fingerprint(suite_rows), scores, graders)


def find_candidate(registry: ModelRegistry, name: str, checkpoint_dir: Path) -> RegisteredVersion:
    version = registry.find(name, checkpoint_dir.name)
    if version is None:
        raise LookupError(f"checkpoint {checkpoint_dir.name} is not registered as '{name}': "
                          f"materialize its candidate asset first")
    return version


def check_candidate(registry: ModelRegistry, name: str, checkpoint_dir: Path, suite_rows: list[dict],
                    settings: GateSettings,
                    evaluate: Callable[[Path, str], GatedScores]) -> GateOutcome:
    """Gate the registered candidate against the champion on the current suites, each suite under the
    grader the candidate was scored with (its primary grader).

    ``evaluate(model_dir, model_version)`` scores a checkpoint on the current suites under their primary
    graders (``gating.evaluate_checkpoint``); it is called only when the champion's recorded scores are
    for other suites or under other graders.
    """
    candidate = find_candidate(registry, name, checkpoint_dir)
    fingerprint = suites_fingerprint(suite_rows)
    if candidate.suites_fingerprint != fingerprint or candidate.scores is None:
        raise ValueError(f"candidate {name} v{candidate.version} was scored on other suites: "
                         f"re-materialize its candidate asset")
    graders = _graders(candidate)
    champion = registry.champion(name)
    reevaluated = False
    if champion is not None and champion.version != candidate.version and (
            champion.suites_fingerprint != fingerprint
            or any(grader != graders.get(suite) for suite, grader in _graders(champion).items())):
        with tempfile.TemporaryDirectory(prefix="champion-") as scratch:
            champion_dir = registry.checkpoint_files(champion, Path(scratch))
            rescored = evaluate(champion_dir, champion.checkpoint_version)
            champion = registry.record_scores(champion, fingerprint, rescored.scores, rescored.graders)
        reevaluated = True
    if champion is not None and champion.version == candidate.version:
        verdict = GateVerdict(True, f"v{candidate.version} is already the champion", [], graders)
    else:
        verdict = gate(candidate.scores, champion.scores if champion else None, settings.tolerance, graders,
                       _graders(champion) if champion else None)
    if verdict.passed:  # promotion checks this, so the alias can only move after a passing gate
        candidate = registry.set_tags(candidate, {GATE_TAG: champion.version if champion else "none"})
    return GateOutcome(verdict, candidate, champion, reevaluated)


def _graders(version: RegisteredVersion) -> dict[str, str]:
    """The grader of each of the version's scores (scores recorded before graders were: all ``exact``)."""
    return version.graders if version.graders is not None else legacy_graders(version.scores)


def promote_candidate(registry: ModelRegistry, name: str, checkpoint_dir: Path) -> tuple[RegisteredVersion,
                                                                                          RegisteredVersion | None]:
    """Move the champion alias to the candidate; returns (new champion, previous champion)."""
    candidate = find_candidate(registry, name, checkpoint_dir)
    previous = registry.champion(name)
    if previous is not None and previous.version == candidate.version:
        return candidate, previous
    gated_against = candidate.tags.get(GATE_TAG)
    if gated_against != (previous.version if previous else "none"):
        raise PermissionError(f"{name} v{candidate.version} has not passed the gate against the current champion "
                              f"({previous.version if previous else 'none'}; gated against {gated_against}): "
                              f"run its no-regression check first")
    registry.promote(candidate)
    return candidate, previous


def record_published_scores(registry: ModelRegistry, prefix: str, score_rows: list[dict],
                            suite_rows: list[dict]) -> list[tuple[str, str]]:
    """Each published model's pass@1 per suite (primary graders, headline setting) on its registry version,
    which its eval asset registered; returns the (variant, model version) pairs not found there (evaluated
    before published models were registered)."""
    missing = []
    for variant, model_version in sorted({(r["variant"], r["model_version"]) for r in score_rows
                                          if str(r.get("model_version")).startswith(PUBLISHED_PREFIX)}):
        version = registry.find(published_model_name(prefix, variant), model_version)
        if version is None:
            missing.append((variant, model_version))
            continue
        gated = suite_scores(score_rows, variant)
        registry.record_scores(version, suites_fingerprint(suite_rows), gated.scores, gated.graders)
    return missing
