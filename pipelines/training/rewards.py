"""Verifiable rewards for GRPO, built on the same grader the eval stage uses."""

from __future__ import annotations

import re

from pipelines.evaluation.grading import extract_final_answer, is_correct

_THINK_THEN_ANSWER = re.compile(r"^\s*<think>.+?</think>\s*-?\d[\d,]*(?:\.\d+)?\s*$", re.S)


def _text(completion) -> str:
    """TRL passes conversational completions as message lists, plain ones as strings."""
    return completion[-1]["content"] if isinstance(completion, list) else completion


def correctness_reward(completions, answer, **kwargs) -> list[float]:
    """1.0 when the final answer equals the gold answer (dataset column ``answer``), else 0.0."""
    return [float(is_correct(extract_final_answer(_text(c)), gold)) for c, gold in zip(completions, answer)]


def format_reward(completions, **kwargs) -> list[float]:
    """0.5 for ``<think>…</think>`` followed by just a number, else 0.0."""
    return [0.5 if _THINK_THEN_ANSWER.match(_text(c)) else 0.0 for c in completions]
