"""Paired perturbations of held-out problems: same answer or re-solved answer, different surface.

The paper measures how much accuracy a model loses when a problem it can solve is rephrased. Three
kinds, each producing a twin of a held-out item that keeps a link to its original:

- ``numbers``: same template and wording, new operands, answer re-solved (needs a generator template);
- ``order``: the question sentence is asked first, before the facts (premise-order sensitivity);
  the answer is unchanged, and it works on any text, GSM8K included;
- ``distractor``: one irrelevant sentence with a number is inserted before the question (GSM-IC style);
  the answer is unchanged, and it works on any text.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace

from pipelines.data.problems import Problem, stable_id
from pipelines.data.synthetic import NAMES, perturb

NUMBERS = "numbers"
ORDER = "order"
DISTRACTOR = "distractor"
PERTURBATIONS = (NUMBERS, ORDER, DISTRACTOR)

# Facts with a number that no question in the generators or GSM8K asks about.
DISTRACTOR_SENTENCES = (
    "{name}'s neighbour has a dog that is {n} years old.",
    "The shop on the corner has {n} windows.",
    "{name}'s cousin lives {n} km away.",
    "It rained on {n} days last month.",
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def split_question(text: str) -> tuple[list[str], str]:
    """(fact sentences, the final question sentence). Raises if the text has no separate question."""
    sentences = [s for s in _SENTENCE.split(text.strip()) if s]
    if len(sentences) < 2:
        raise ValueError(f"cannot separate facts from the question in: {text[:80]!r}")
    return sentences[:-1], sentences[-1]


def question_first(problem: Problem) -> Problem:
    facts, question = split_question(problem.question)
    return _twin(problem, ORDER, " ".join([question, *facts]))


def with_distractor(problem: Problem, rng: random.Random) -> Problem:
    facts, question = split_question(problem.question)
    sentence = rng.choice(DISTRACTOR_SENTENCES).format(name=rng.choice(NAMES), n=rng.randint(2, 99))
    return _twin(problem, DISTRACTOR, " ".join([*facts, sentence, question]))


def _twin(problem: Problem, kind: str, question: str) -> Problem:
    key = f"{problem.key}|{kind}"
    return replace(problem, problem_id=stable_id(key, question), key=key, question=question,
                   source=f"{kind}:{problem.problem_id}")


def perturbation_for(problem: Problem, kind: str, rng: random.Random, max_operand: int,
                     forbidden_keys: set[str]) -> Problem | None:
    """The ``kind`` twin of ``problem``, or None when that kind does not apply (numbers without a template)."""
    if kind == NUMBERS:
        return perturb(problem, rng, max_operand, forbidden_keys) if problem.template else None
    if kind == ORDER:
        return question_first(problem)
    if kind == DISTRACTOR:
        return with_distractor(problem, rng)
    raise ValueError(f"unknown perturbation '{kind}', expected one of {PERTURBATIONS}")
