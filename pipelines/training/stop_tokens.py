"""Which token ids end a generation, for any model family: read from the tokenizer and generation config.

Families name their stop tokens differently (ChatML ``<|im_end|>``, Llama-3 ``<|eot_id|>`` and
``<|end_of_text|>``, Mistral ``</s>``, Gemma ``<end_of_turn>``), and ``eos_token_id`` is an int in some
generation configs (Qwen3-Base, Llama-3 base) and a list in others (Llama-3-Instruct). Looking tokens up
by one family's names gave other families ``[None, None]``; here nothing is looked up by name.
"""

from __future__ import annotations

_PROBE = "lineage stop probe"


def as_id_list(value) -> list[int]:
    """``eos_token_id`` as a list: an int, a list/tuple of ints, or None."""
    if value is None:
        return []
    values = value if isinstance(value, (list, tuple)) else [value]
    return [int(v) for v in values if v is not None]


def chat_turn_end_ids(tokenizer) -> list[int]:
    """The special token the chat template closes an assistant turn with (what a chat-tuned model learns
    to emit), found by rendering one turn: ``<|im_end|>``, ``<|eot_id|>``, ``</s>``…; [] without one."""
    if not getattr(tokenizer, "chat_template", None):
        return []
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "q"},
                                              {"role": "assistant", "content": _PROBE}], tokenize=False)
    except Exception:  # noqa: BLE001 - a template that cannot render this turn has no end token to learn
        return []
    if _PROBE not in text:
        return []
    after = tokenizer(text[text.rindex(_PROBE) + len(_PROBE):], add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    return after[:1] if after and after[0] in special else []


def stop_token_ids(tokenizer, generation_config=None) -> list[int]:
    """Every id that ends a generation: the generation config's ``eos_token_id`` (int or list), the
    tokenizer's eos, and the chat template's end-of-turn token; in that order, without repeats."""
    ids = as_id_list(getattr(generation_config, "eos_token_id", None))
    ids += as_id_list(tokenizer.eos_token_id) + chat_turn_end_ids(tokenizer)
    return list(dict.fromkeys(ids))
