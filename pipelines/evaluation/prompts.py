"""How each variant is asked a question: base models continue text, chat models get the chat template."""

from __future__ import annotations

from pipelines.data.formats import base_prompt, user_messages

BASE = "base"
INSTRUCT = "instruct"
REASONING = "reasoning"
VARIANTS = (BASE, INSTRUCT, REASONING)


def build_prompt(variant: str, question: str, tokenizer) -> str:
    if variant == BASE:
        return base_prompt(question)
    if variant in (INSTRUCT, REASONING):
        return tokenizer.apply_chat_template(user_messages(question), add_generation_prompt=True, tokenize=False)
    raise ValueError(f"unknown variant '{variant}', expected one of {VARIANTS}")
