"""How each variant is asked a question: base models continue text, chat models get the chat template
with the chat options their checkpoint was trained with (system prompt, template kwargs) or overrides."""

from __future__ import annotations

from pipelines.data.formats import base_prompt, user_messages
from pipelines.training.chat_options import ChatOptions

BASE = "base"
INSTRUCT = "instruct"
REASONING = "reasoning"
VARIANTS = (BASE, INSTRUCT, REASONING)


def build_prompt(variant: str, question: str, tokenizer, chat: ChatOptions | None = None) -> str:
    if variant == BASE:
        return base_prompt(question)
    if variant in (INSTRUCT, REASONING):
        return (chat or ChatOptions()).generation_prompt(tokenizer, user_messages(question))
    raise ValueError(f"unknown variant '{variant}', expected one of {VARIANTS}")
