"""How each variant is asked a question: base models continue text, chat models get the chat template
with the chat options their checkpoint was trained with (system prompt, template kwargs) or overrides."""

from __future__ import annotations

import random

from pipelines.data.formats import assistant_messages, base_prompt, corpus_document, user_messages
from pipelines.training.chat_options import ChatOptions

BASE = "base"
INSTRUCT = "instruct"
REASONING = "reasoning"  # the final reasoning model: the last self-improvement round's checkpoint
VARIANTS = (BASE, INSTRUCT, REASONING)
# The reasoning branch's earlier self-improvement rounds, evaluated as the reasoning variant is (a chat model,
# thinking-mode sampling) so the report can follow it round by round: round 0 (reasoning_checkpoint), 1, ...
ROUND_PREFIX = "reasoning_round_"


def round_variant(index: int) -> str:
    return f"{ROUND_PREFIX}{index}"


def is_chat_variant(variant: str) -> bool:
    return variant in (INSTRUCT, REASONING) or (
        variant.startswith(ROUND_PREFIX) and variant[len(ROUND_PREFIX):].isdigit())


def variant_rank(variant: str) -> tuple[int, int, str]:
    """Report order: base, instruct, the rounds in order, the final reasoning model, anything else."""
    if variant.startswith(ROUND_PREFIX) and variant[len(ROUND_PREFIX):].isdigit():
        return 3, int(variant[len(ROUND_PREFIX):]), variant
    order = {BASE: 0, INSTRUCT: 1, REASONING: 4}
    return order.get(variant, 5), 0, variant


def ordered_variants(variants) -> list[str]:
    return sorted(set(variants), key=variant_rank)


def build_prompt(variant: str, question: str, tokenizer, chat: ChatOptions | None = None,
                 exemplars: list[dict] | tuple = (), system_prompt: str | None = None) -> str:
    """The prompt for ``question``; ``exemplars`` (training problems: question, solution, answer) make it
    few-shot CoT: for the base model as earlier Question/Answer documents, for chat models as prior turns
    whose answers show the worked solution as visible text (as lm-eval's multi-turn CoT few-shot does):
    inside ``<think>`` it would be dropped by templates that strip earlier turns' thinking, Qwen3's among them.

    ``system_prompt`` is the item's suite's own (``eval_suites.system_prompt``): chat models get it instead
    of ``chat``'s (the checkpoint's, or the eval config's override), the base model as a first line of
    plain text, a blank line before the exemplars and question. None or "": the prompt is as without it."""
    if variant == BASE:
        shots = "".join(corpus_document(e["question"], e["solution"], e["answer"]) + "\n\n" for e in exemplars)
        return (f"{system_prompt}\n\n" if system_prompt else "") + shots + base_prompt(question)
    if is_chat_variant(variant):
        turns = [turn for e in exemplars for turn in user_messages(e["question"]) + assistant_messages(
            f"{e['solution']} The answer is {e['answer']}.")]
        options = chat or ChatOptions()
        if system_prompt:
            options = options.overridden(system_prompt=system_prompt)
        return options.generation_prompt(tokenizer, turns + user_messages(question))
    raise ValueError(f"unknown variant '{variant}', expected one of {VARIANTS}")


def few_shot_exemplars(training_rows: list[dict], n: int, seed: int) -> list[dict]:
    """``n`` training problems with a worked solution, drawn with ``seed``: the same shots for every item."""
    if n == 0:
        return []
    pool = sorted((r for r in training_rows if r.get("solution")), key=lambda r: r["problem_id"])
    if len(pool) < n:
        raise ValueError(f"few_shot {n}: only {len(pool)} training problems with a worked solution to draw from")
    return [{k: r[k] for k in ("problem_id", "question", "solution", "answer")}
            for r in random.Random(seed).sample(pool, n)]
