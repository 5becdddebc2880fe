"""Sampling metrics over graded generations: unbiased pass@k and majority voting (maj@k)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): P(at least one of k draws without replacement is correct)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def majority_answer(answers: Sequence[str | None]) -> str | None:
    """The most frequent *normalized* answer (ties: the one seen first); None answers do not vote."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return None
    best = max(votes.values())
    return next(a for a in answers if a is not None and votes[a] == best)


def majority_verdict(answers: Sequence[str | None], correct: Sequence[bool]) -> bool:
    """maj@k for one item: the grader's own verdict on the most frequent of its normalized answers.

    Votes are each grader's normalized answers, so equivalent answers ("$18.00", "18") vote together;
    the voted answer is right exactly when the grader called its samples right, so maj@k uses the same
    notion of "equal to gold" as pass@k, including math-verify's symbolic one.
    """
    voted = majority_answer(answers)
    return voted is not None and next(ok for answer, ok in zip(answers, correct) if answer == voted)


def maj_at_k(answers: Sequence[str | None], correct: Sequence[bool], k: int) -> bool:
    """Majority vote over the first ``k`` samples (see ``majority_verdict``)."""
    return majority_verdict(answers[:k], correct[:k])
