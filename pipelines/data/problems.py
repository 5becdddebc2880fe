"""The one row shape every raw source produces, and the keys used to keep eval disjoint from training."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

TRAIN_SPLIT = "train"
TEST_SPLIT = "test"


@dataclass(frozen=True)
class Problem:
    """A math word problem with a worked solution and an exact final answer.

    ``key`` identifies the *problem* (not its wording) so that two phrasings of the same arithmetic
    can never land on both sides of the train/eval split.
    """

    problem_id: str
    key: str
    split: str
    question: str
    solution: str
    answer: str
    source: str
    source_line: int | None = None
    template: str | None = None
    template_params: str | None = None  # JSON of operands + names, so a perturbation can re-solve it

    def as_row(self) -> dict:
        return asdict(self)


def normalize_question(question: str) -> str:
    """Case- and whitespace-insensitive form used for exact-duplicate and overlap checks."""
    # = re.sub(r"\s+", " ", question.strip().lower()): the same whitespace (str.isspace) for every code
    # point, and lower() maps none to or from whitespace; several times faster on long texts
    return " ".join(question.lower().split())


def stable_id(*parts: str) -> str:
    """Short content hash: the same content always gets the same id, across runs and machines."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def split_for(key: str, eval_fraction: float) -> str:
    """Deterministic split from the problem key: stable when the dataset grows or is re-generated."""
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return TEST_SPLIT if bucket < eval_fraction else TRAIN_SPLIT
