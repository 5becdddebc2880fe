"""Champion gating: a new checkpoint replaces the champion only if it does not regress on any suite.

Both are compared on the same items: the candidate's scores come from this evaluation; the champion's
were recorded in the registry with the fingerprint of the suites they were measured on, and when the
suites have changed since, the champion is evaluated again on the current ones (same decoding).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipelines.evaluation.decoding import Decoding, generate_samples
from pipelines.evaluation.scoring import DEFAULT_GRADER, grade_generations, score


@dataclass(frozen=True)
class GateSettings:
    tolerance: float = 0.02  # the largest pass@1 drop on a suite that still counts as "no regression"
    grader: str = DEFAULT_GRADER


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reason: str
    rows: list[dict]  # per suite: champion, candidate, delta, regressed

    def markdown(self) -> str:
        lines = ["| suite | champion | candidate | Δ | regressed |", "|---|---|---|---|---|"]
        lines += [f"| {r['suite']} | {r['champion']:.3f} | {r['candidate']:.3f} | {r['delta']:+.3f} | "
                  f"{'yes' if r['regressed'] else 'no'} |" for r in self.rows]
        return f"**{self.reason}**\n\n" + "\n".join(lines)


def suite_scores(score_rows: list[dict], variant: str, grader: str) -> dict[str, float]:
    """pass@1 per suite of one variant under one grader."""
    scores = {r["suite"]: float(r["pass_at_1"]) for r in score_rows
              if r["variant"] == variant and r["grader"] == grader}
    if not scores:
        raise ValueError(f"no '{grader}' scores for variant '{variant}': materialize eval_scores first")
    return scores


def gate(candidate: dict[str, float], champion: dict[str, float] | None, tolerance: float) -> GateVerdict:
    if tolerance < 0:
        raise ValueError(f"gating tolerance must be >= 0, got {tolerance}")
    if champion is None:
        return GateVerdict(True, "no champion yet: the first candidate becomes champion", [])
    missing = sorted(set(champion) - set(candidate))
    if missing:
        return GateVerdict(False, f"candidate has no scores on suites {missing} the champion was measured on", [])
    rows = [{"suite": suite, "champion": champion[suite], "candidate": candidate[suite],
             "delta": candidate[suite] - champion[suite],
             "regressed": candidate[suite] < champion[suite] - tolerance - 1e-12} for suite in sorted(champion)]
    regressed = [r["suite"] for r in rows if r["regressed"]]
    if regressed:
        return GateVerdict(False, f"regression beyond tolerance {tolerance} on {', '.join(regressed)}", rows)
    return GateVerdict(True, f"no suite dropped by more than {tolerance}", rows)


def evaluate_checkpoint(variant: str, model_dir: Path, suite_rows: list[dict], decoding: Decoding,
                        model_version: str, grader: str, workers: int) -> dict[str, float]:
    """pass@1 per suite of a checkpoint on ``suite_rows``, with the variant's decoding (for a champion)."""
    generations = generate_samples(variant, model_dir, suite_rows, decoding, model_version=model_version)
    graded = [g for g in grade_generations(generations, workers=workers) if g["grader"] == grader]
    return suite_scores(score(generations, graded), variant, grader)
