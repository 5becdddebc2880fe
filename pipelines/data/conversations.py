"""User training records in the formats TRL, axolotl and LLaMA-Factory accept, as the lineage's rows.

One record becomes one row of kind ``sft``, ``think`` or ``preference``, or a ``Rejected`` naming the
field and why, so the caller can quarantine it. Accepted shapes (column names can be remapped):

- conversational ``messages`` (OpenAI roles; system prompt and earlier turns kept), ShareGPT
  ``conversations`` (``from``/``value``, as axolotl and LLaMA-Factory read it), ``prompt``/``completion``
  (strings or message lists, TRL's prompt-completion form) and Alpaca ``instruction``/``input``/``output``;
- think: the assistant turn holds ``<think>…</think>`` then the answer, or the reasoning is a separate
  ``reasoning_content`` / ``reasoning`` field (DeepSeek / OpenThoughts exports), on the turn or the record;
- preference: TRL's explicit prompt (``prompt``, ``chosen``, ``rejected``) and implicit prompt (``chosen``
  and ``rejected`` conversations sharing their first turns), plain strings or conversational.

A row trains its last assistant turn; the turns before it (system prompt included) are its prompt,
stored as JSON in ``messages`` when they are more than one user turn (``formats.prompt_messages``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pipelines.data.formats import THINK_CLOSE, THINK_OPEN, think_completion
from pipelines.data.problems import normalize_question, stable_id

KINDS = ("sft", "think", "preference")
ROW_COLUMNS = ("kind", "problem_id", "source", "source_row", "prompt", "messages", "completion", "chosen",
               "rejected", "answer")
CANONICAL_FIELDS = ("messages", "conversations", "prompt", "completion", "instruction", "input", "output",
                    "system", "chosen", "rejected", "reasoning_content", "reasoning", "answer")
ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "tool": "tool", "function_call": "assistant", "observation": "tool"}
REASONING_FIELDS = ("reasoning_content", "reasoning")


@dataclass(frozen=True)
class Rejected:
    """Why a record cannot be used, naming the field: ``kind`` is the quarantine reason's class."""

    kind: str
    reason: str


def detect_kind(record: dict, columns: dict[str, str] | None = None, text: str | None = None) -> str | None:
    """Which dataset a record belongs to by its fields (TRL's rule: chosen + rejected is preference);
    ``None`` for a GSM8K-style problem or anything else, which the problems reader handles. ``text``:
    the JSON the record was parsed from (a JSONL line), which answers at once when it has no ``\\u``
    escape and no "reasoning": its strings then hold ``<think>`` exactly when it does."""
    field = _fields(columns)
    if field("chosen") in record and field("rejected") in record:
        return "preference"
    if not any(field(name) in record for name in ("messages", "conversations", "completion", "output")):
        return None
    if text is not None and "\\u" not in text and "reasoning" not in text:
        return "think" if THINK_OPEN in text else "sft"
    mentions = _mentions_reasoning(record)
    if mentions is None:  # values json.dumps would convert: decide on the text, as the walk stands for
        text = json.dumps(record, ensure_ascii=False, default=str)
        mentions = THINK_OPEN in text or any(f'"{name}": "' in text for name in REASONING_FIELDS)
    return "think" if mentions else "sft"


def _mentions_reasoning(value: object) -> bool | None:
    """Whether the record's JSON text holds ``<think>`` or a reasoning field with a string value, found by
    walking it (~3× faster than serialising every record); None when a key or value is not plain JSON
    (the text would differ from the walk), or on a cycle."""
    def walk(item: object) -> bool:
        if isinstance(item, str):
            return THINK_OPEN in item
        if isinstance(item, dict):
            found = False
            for key, child in item.items():
                if not isinstance(key, str) or '"' in key:
                    raise _NotPlain
                in_child = walk(child)  # walked even when found: a later value may not be plain
                found = found or in_child or THINK_OPEN in key or (key in REASONING_FIELDS and isinstance(child, str))
            return found
        if isinstance(item, (list, tuple)):
            return any([walk(child) for child in item])  # a list: every child walked, as dumps would
        if item is None or isinstance(item, (int, float)):
            return False
        raise _NotPlain

    try:
        return walk(value)
    except (_NotPlain, RecursionError):
        return None


class _NotPlain(Exception):
    pass


def to_row(record: object, kind: str, source: str, source_row: int,
           columns: dict[str, str] | None = None) -> dict | Rejected:
    """The lineage row for ``record`` (see ``ROW_COLUMNS``), or why it is rejected."""
    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind '{kind}', expected one of {KINDS}")
    if not isinstance(record, dict):
        return Rejected("not_object", f"not a JSON object but {type(record).__name__}")
    field = _fields(columns)
    try:
        if kind == "preference":
            context, chosen, rejected = _preference(record, field)
            if chosen == rejected:
                return Rejected("identical_pair", f"'{field('chosen')}' and '{field('rejected')}' are identical")
            row = {"chosen": chosen, "rejected": rejected}
        else:
            conversation = _conversation(record, field)
            context, final = conversation[:-1], conversation[-1]
            completion = _with_reasoning(final, record, field) if kind == "think" else final["content"]
            if not completion or completion.isspace():
                return Rejected("empty_field", "the assistant turn to train is empty")
            row = {"completion": completion}
    except _Bad as bad:
        return Rejected(bad.kind, bad.reason)
    users = [m["content"] for m in context if m["role"] == "user"]
    if not users:
        return Rejected("no_user_turn", "no user turn before the trained answer")
    answer = record.get(field("answer"))
    context_json = json.dumps(context)
    return {"kind": kind, "source": source, "source_row": source_row, "prompt": users[-1],
            "messages": None if context == [{"role": "user", "content": users[-1]}] else context_json,
            "completion": None, "chosen": None, "rejected": None,
            "answer": None if answer is None else str(answer), **row,
            "problem_id": stable_id(kind, context_json, normalize_question(
                row.get("completion") or row["chosen"] + "\x1f" + row["rejected"]))}


class _Bad(ValueError):
    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, reason


class _Names(dict):
    """Canonical field name -> the record's column name (itself unless remapped)."""

    def __missing__(self, name: str) -> str:
        return name


_SAME_NAMES = _Names({name: name for name in CANONICAL_FIELDS}).__getitem__  # no mapping: built once


def _fields(columns: dict[str, str] | None):
    if not columns:
        return _SAME_NAMES
    unknown = sorted(set(columns) - set(CANONICAL_FIELDS))
    if unknown:
        raise ValueError(f"columns: unknown field(s) {unknown}; map any of {list(CANONICAL_FIELDS)} "
                         f"to your column names, e.g. {{prompt: question, completion: response}}")
    return _Names({**{name: name for name in CANONICAL_FIELDS}, **columns}).__getitem__


def _text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise _Bad("wrong_type", f"field '{name}' is {type(value).__name__}, expected string")
    if not value or value.isspace():
        raise _Bad("empty_field", f"field '{name}' is empty")
    return value


def _messages(value: object, name: str) -> list[dict]:
    """OpenAI-style or ShareGPT turns as ``[{role, content}]`` (extra keys such as reasoning kept)."""
    if not isinstance(value, list) or not value:
        raise _Bad("wrong_type", f"field '{name}' is {type(value).__name__ if value != [] else 'an empty list'}, "
                                 f"expected a list of messages")
    turns = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise _Bad("wrong_type", f"field '{name}[{i}]' is {type(turn).__name__}, expected a message object")
        has_reasoning = "reasoning_content" in turn or "reasoning" in turn
        if "from" in turn and "role" not in turn:  # ShareGPT
            role = SHAREGPT_ROLES.get(turn["from"])
            if role is None:
                raise _Bad("bad_role", f"field '{name}[{i}].from' is '{turn['from']}', expected one of "
                                       f"{sorted(SHAREGPT_ROLES)}")
            content = _text(turn.get("value"), f"{name}[{i}].value")
        else:
            role = turn.get("role")
            if role not in ROLES:
                raise _Bad("bad_role", f"field '{name}[{i}].role' is {role!r}, expected one of {list(ROLES)}")
            content = turn.get("content")
            if has_reasoning and role == "assistant" and content == "" and any(turn.get(k) for k in REASONING_FIELDS):
                content = ""  # the whole turn may be its reasoning; the answer check comes later
            elif not isinstance(content, str) or not content or content.isspace():  # _text's checks, inline
                content = _text(content, f"{name}[{i}].content")
        turns.append({"role": role, "content": content, **_reasoning_of(turn)} if has_reasoning
                     else {"role": role, "content": content})
    return turns


def _reasoning_of(turn: dict) -> dict:
    return {k: turn[k] for k in REASONING_FIELDS if isinstance(turn.get(k), str) and turn[k]}


def _as_turns(value: object, name: str, role: str) -> list[dict]:
    return [{"role": role, "content": _text(value, name)}] if isinstance(value, str) else _messages(value, name)


def _conversation(record: dict, field) -> list[dict]:
    """The whole conversation, ending with the assistant turn to train."""
    if field("messages") in record or field("conversations") in record:
        name = field("messages") if field("messages") in record else field("conversations")
        turns = _messages(record[name], name)
    elif field("prompt") in record or field("completion") in record:
        for name in (field("prompt"), field("completion")):
            if name not in record:
                raise _Bad("missing_field", f"missing field '{name}'")
        turns = _as_turns(record[field("prompt")], field("prompt"), "user") + \
            _as_turns(record[field("completion")], field("completion"), "assistant")
    elif field("instruction") in record or field("output") in record:  # Alpaca
        for name in (field("instruction"), field("output")):
            if name not in record:
                raise _Bad("missing_field", f"missing field '{name}'")
        question = _text(record[field("instruction")], field("instruction"))
        extra = record.get(field("input"))
        if extra not in (None, ""):
            question = f"{question}\n\n{_text(extra, field('input'))}"
        turns = [{"role": "user", "content": question},
                 {"role": "assistant", "content": _text(record[field("output")], field("output"))}]
    else:
        raise _Bad("missing_field", f"missing field '{field('messages')}' (or '{field('prompt')}'/"
                                    f"'{field('completion')}', '{field('conversations')}', "
                                    f"'{field('instruction')}'/'{field('output')}')")
    system = record.get(field("system"))
    if system not in (None, "") and turns[0]["role"] != "system":
        turns = [{"role": "system", "content": _text(system, field("system"))}, *turns]
    if turns[-1]["role"] != "assistant":
        raise _Bad("no_assistant_turn", f"the last message is '{turns[-1]['role']}', expected 'assistant' "
                                        f"(the turn to train)")
    return turns


def _with_reasoning(final: dict, record: dict, field) -> str:
    """``<think>reasoning</think>answer`` from the turn's content or a separate reasoning field."""
    content = final["content"]
    separate = final.get("reasoning_content") or final.get("reasoning") or next(
        (record[field(k)] for k in REASONING_FIELDS if isinstance(record.get(field(k)), str) and record[field(k)].strip()),
        None)
    if separate is not None:
        if THINK_OPEN in content:
            raise _Bad("ambiguous_reasoning", "the assistant turn has both <think>…</think> and a reasoning field")
        reasoning, answer = separate.strip(), content.strip()
    else:
        start, end = content.find(THINK_OPEN), content.find(THINK_CLOSE)
        if start < 0 or end < start:
            raise _Bad("no_reasoning", f"the assistant turn has no {THINK_OPEN}…{THINK_CLOSE} and the record no "
                                       f"'{field('reasoning_content')}' / '{field('reasoning')}' field")
        if content[:start].strip():
            raise _Bad("text_before_think", f"the assistant turn has text before {THINK_OPEN}")
        reasoning, answer = content[start + len(THINK_OPEN):end].strip(), content[end + len(THINK_CLOSE):].strip()
    if not reasoning:
        raise _Bad("empty_reasoning", "the reasoning is empty")
    if not answer:
        raise _Bad("no_final_answer", f"nothing after {THINK_CLOSE}: the answer the reasoning leads to is missing")
    return think_completion(reasoning, answer)


def _preference(record: dict, field) -> tuple[list[dict], str, str]:
    """(prompt turns, chosen answer, rejected answer) from explicit or implicit-prompt pairs."""
    for name in (field("chosen"), field("rejected")):
        if name not in record:
            raise _Bad("missing_field", f"missing field '{name}'")
    chosen = _as_turns(record[field("chosen")], field("chosen"), "assistant")
    rejected = _as_turns(record[field("rejected")], field("rejected"), "assistant")
    if field("prompt") in record:
        context = _as_turns(record[field("prompt")], field("prompt"), "user")
    else:  # implicit prompt: the turns both conversations share
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        context, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
        if not context:
            raise _Bad("missing_field", f"missing field '{field('prompt')}' and the two conversations share no "
                                        f"first turns (implicit prompt)")
    for name, turns in ((field("chosen"), chosen), (field("rejected"), rejected)):
        if len(turns) != 1 or turns[0]["role"] != "assistant":
            raise _Bad("no_assistant_turn", f"field '{name}' must end the conversation with one assistant turn")
    return context, chosen[0]["content"], rejected[0]["content"]
