"""Every record shape TRL, axolotl and LLaMA-Factory accept becomes a row; a bad one is rejected naming its field."""

import json

import pytest

from pipelines.data.conversations import Rejected, detect_kind, to_row
from pipelines.data.formats import prompt_messages
from tests.fixtures.user_data import SYSTEM, preference_records, sft_records, think_records


def test_conversations_keep_system_prompt_and_earlier_turns_and_train_the_last_answer():
    record = sft_records(1)[0]  # system + a two-turn conversation
    row = to_row(record, detect_kind(record), "f.jsonl", 1)
    context = json.loads(row["messages"])
    assert context[0] == {"role": "system", "content": SYSTEM}
    assert [m["role"] for m in context] == ["system", "user", "assistant", "user"]
    assert row["prompt"] == "What is 0 plus 1?" and row["completion"] == "0 plus 1 is 1."
    assert prompt_messages(row) == context  # what the trainer is given


@pytest.mark.parametrize("record", [
    {"prompt": "2+3?", "completion": "5"},
    {"prompt": [{"role": "user", "content": "2+3?"}], "completion": [{"role": "assistant", "content": "5"}]},
    {"conversations": [{"from": "human", "value": "2+3?"}, {"from": "gpt", "value": "5"}]},
    {"instruction": "2+3?", "input": "", "output": "5"},
])
def test_prompt_completion_sharegpt_and_alpaca_give_the_same_row(record):
    row = to_row(record, detect_kind(record), "f", 1)
    assert (row["kind"], row["prompt"], row["messages"], row["completion"]) == ("sft", "2+3?", None, "5")


def test_reasoning_in_think_tags_or_a_separate_field_becomes_one_think_completion_with_its_newlines():
    tagged, separate = think_records(2)[1], think_records(2)[0]
    assert detect_kind(tagged) == detect_kind(separate) == "think"
    row = to_row(tagged, "think", "f", 2)
    assert row["completion"] == ("<think>There are 6 apples.\nDividing by 3 gives 2.</think>"
                                 "Each group gets $\\boxed{2}$ apples.")
    assert to_row(separate, "think", "f", 1)["completion"] == "<think>3 / 3 = 1\nso 1 each.</think>1 apples per group."
    assert row["answer"] == "2"


def test_explicit_and_implicit_prompt_pairs_give_the_same_row():
    explicit, implicit = preference_records(2)[1], preference_records(2)[0]
    assert detect_kind(explicit) == detect_kind(implicit) == "preference"
    a, b = to_row(explicit, "preference", "f", 1), to_row(implicit, "preference", "f", 1)
    assert (a["chosen"], a["rejected"]) == (b["chosen"], b["rejected"]) == ("Even.", "Odd.")


def test_a_column_mapping_reads_other_names():
    row = to_row({"q": "2+3?", "r": "5"}, "sft", "f", 1, columns={"prompt": "q", "completion": "r"})
    assert (row["prompt"], row["completion"]) == ("2+3?", "5")
    with pytest.raises(ValueError, match="unknown field"):
        to_row({}, "sft", "f", 1, columns={"question": "q"})


@pytest.mark.parametrize("record, kind, reason", [
    ({"messages": [{"role": "user", "content": "q"}]}, "sft", "last message is 'user'"),
    ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]}, "sft",
     "field 'messages[0].content' is int"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "no tags"}]}, "think",
     "no <think>…</think>"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>r</think>"}]}, "think",
     "nothing after </think>"),
    ({"prompt": "q", "chosen": "a"}, "preference", "missing field 'rejected'"),
    ({"prompt": "q", "chosen": "a", "rejected": "a"}, "preference", "identical"),
    ({"chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]},
     "preference", "share no first turns"),
    ({"prompt": "q", "completion": ""}, "sft", "field 'completion' is empty"),
])
def test_a_bad_record_is_rejected_with_a_reason_naming_the_field(record, kind, reason):
    rejected = to_row(record, kind, "f", 1)
    assert isinstance(rejected, Rejected) and reason in rejected.reason, rejected


def test_a_gsm8k_problem_is_not_a_chat_record():
    assert detect_kind({"question": "1+1?", "answer": "#### 2"}) is None
