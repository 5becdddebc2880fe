"""Champion gating: a new checkpoint replaces the champion only if it does not regress on any suite.

Both are compared on the same items and with the same grader: each suite is gated on its *primary*
grader (math-verify for a ``math`` suite's LaTeX answers, ``exact`` otherwise; the ``primary`` flag
``eval_scores`` rows carry), in the headline few-shot setting. The candidate's scores come from this
evaluation; the champion's were recorded in the registry with the fingerprint of the suites and the
graders they were measured with, and when either has changed since, the champion is evaluated again
on the current suites (same decoding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from pipelines.evaluation.decoding import Decoding, generate_samples
from pipelines.evaluation.graders import item_tolerances
from pipelines.evaluation.scoring import (DEFAULT_GRADER, grade_generations, is_headline, is_primary, mark_primary,
                                         score)


@dataclass(frozen=True)
class GateSettings:
    """How far a suite may drop. There is no grader setting: every suite is gated on its primary grader."""
    tolerance: float = 0.02  # the largest pass@1 drop on a suite that still counts as "no regression"


class GatedScores(NamedTuple):
    scores: dict[str, float]  # pass@1 per suite
    graders: dict[str, str]  # the grader each suite's pass@1 is under (its primary grader)


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reason: str
    rows: list[dict]  # per suite: champion, candidate, delta, regressed, grader
    graders: dict[str, str] = field(default_factory=dict)  # the grader each suite was gated on

    def markdown(self) -> str:
        lines = ["| suite | champion | candidate | Δ | regressed | grader |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['suite']} | {r['champion']:.3f} | {r['candidate']:.3f} | {r['delta']:+.3f} | "
                  f"{'yes' if r['regressed'] else 'no'} | {r.get('grader') or '?'} |" for r in self.rows]
        return f"**{self.reason}**\n\n" + "\n".join(lines)


def suite_scores(score_rows: list[dict], variant: str) -> GatedScores:
    """pass@1 per suite of one variant, each suite under its primary grader (headline rows only)."""
    gated: dict[str, dict] = {}
    for row in score_rows:
        if row["variant"] != variant or not is_primary(row) or not is_headline(row):
            continue
        if row["suite"] in gated:
            raise ValueError(f"several headline '{variant}' scores on suite '{row['suite']}' under its primary grader "
                             f"('{gated[row['suite']]['grader']}', '{row['grader']}'): the gate needs exactly one")
        gated[row["suite"]] = row
    if not gated:
        raise ValueError(f"no primary-grader scores for variant '{variant}': materialize eval_scores first")
    return GatedScores({suite: float(r["pass_at_1"]) for suite, r in gated.items()},
                       {suite: r["grader"] for suite, r in gated.items()})


def legacy_graders(scores: dict[str, float] | None) -> dict[str, str]:
    """The graders of scores recorded before graders were: the gate then scored every suite ``exact``."""
    return {suite: DEFAULT_GRADER for suite in scores or {}}


def gate(candidate: dict[str, float], champion: dict[str, float] | None, tolerance: float,
         graders: dict[str, str] | None = None, champion_graders: dict[str, str] | None = None) -> GateVerdict:
    """``graders``: the grader of each candidate score (recorded in the verdict); a champion score under
    another grader (``champion_graders``) is not comparable, and fails the gate."""
    if tolerance < 0:
        raise ValueError(f"gating tolerance must be >= 0, got {tolerance}")
    graders = dict(graders or {})
    if champion is None:
        return GateVerdict(True, "no champion yet: the first candidate becomes champion", [], graders)
    missing = sorted(set(champion) - set(candidate))
    if missing:
        return GateVerdict(False, f"candidate has no scores on suites {missing} the champion was measured on", [],
                           graders)
    if champion_graders is not None:
        mismatched = sorted(s for s in champion if champion_graders.get(s) != graders.get(s))
        if mismatched:
            return GateVerdict(False, "candidate and champion were scored with different graders on "
                               + ", ".join(f"{s} ({graders.get(s)} vs {champion_graders.get(s)})" for s in mismatched)
                               + ": re-materialize eval_scores and the candidate", [], graders)
    rows = [{"suite": suite, "champion": champion[suite], "candidate": candidate[suite],
             "delta": candidate[suite] - champion[suite], "grader": graders.get(suite),
             "regressed": candidate[suite] < champion[suite] - tolerance - 1e-12} for suite in sorted(champion)]
    regressed = [r["suite"] for r in rows if r["regressed"]]
    if regressed:
        return GateVerdict(False, f"regression beyond tolerance {tolerance} on {', '.join(regressed)}", rows, graders)
    return GateVerdict(True, f"no suite dropped by more than {tolerance}", rows, graders)


def answer_types(suite_rows: list[dict]) -> dict[str, str]:
    """Each suite's answer type (``eval_suites.answer_type``; suites stored before it: number)."""
    return {r["suite"]: r.get("answer_type") or "number" for r in suite_rows}


def evaluate_checkpoint(variant: str, model_dir: Path, suite_rows: list[dict], decoding: Decoding,
                        model_version: str, workers: int) -> GatedScores:
    """pass@1 per suite of a checkpoint on ``suite_rows``, with the variant's decoding (for a champion),
    each suite under its primary grader (from the suite rows' ``answer_type``), graded as ``eval_scores``
    grades (number suites' ``rel_tol``)."""
    generations = generate_samples(variant, model_dir, suite_rows, decoding, model_version=model_version)
    graded = grade_generations(generations, workers=workers, tolerances=item_tolerances(suite_rows))
    return suite_scores(mark_primary(score(generations, graded), answer_types(suite_rows)), variant)
