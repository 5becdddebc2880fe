"""A large JSONL file's lines converted in worker processes give exactly what one process gives.

The workers only start for files over ``PARALLEL_MIN_BYTES``; here the threshold is lowered and the
chunks made small, so chunk edges fall among bad lines, duplicates and the row cap."""

import json

import pyarrow.parquet as pq
import pytest

from pipelines.data import row_stream, user_data
from pipelines.data.conversations import detect_kind
from pipelines.data.user_data import TrainingSource, ingest_training_data
from tests.fixtures.user_data import BAD_SFT, preference_records, sft_records, think_records, write_jsonl


def _everything(sources, rows_file):
    result = ingest_training_data(sources, rows_file)
    return {"rows": pq.read_table(result.rows_file).to_pylist(), "quarantined": result.quarantined,
            "outcomes": [o.summary() for o in result.outcomes], "audit": result.audit(), "version": result.version}


@pytest.fixture
def in_workers(monkeypatch):
    def switch():
        monkeypatch.setattr(row_stream, "PARALLEL_MIN_BYTES", 0)
        monkeypatch.setattr(row_stream, "CHUNK_RECORDS", 7)
        monkeypatch.setattr(user_data, "Workers", lambda: row_stream.Workers(count=2))
    return switch


def test_worker_conversion_keeps_the_rows_quarantine_and_caps_of_one_process(tmp_path, in_workers):
    records = sft_records(40) + think_records(20) + preference_records(20)
    write_jsonl(tmp_path / "mixed.jsonl", records + records[:9], BAD_SFT)  # 9 duplicates, 5 bad lines
    sources = [TrainingSource(str(tmp_path / "mixed.jsonl")), TrainingSource(str(tmp_path / "mixed.jsonl"), max_rows=23),
               TrainingSource(str(tmp_path / "mixed.jsonl"), kind="sft")]
    one_process = _everything(sources, tmp_path / "one.parquet")
    in_workers()
    assert _everything(sources, tmp_path / "workers.parquet") == one_process
    assert one_process["outcomes"][0] == {"source": str(tmp_path / "mixed.jsonl"), "records": 94, "kept": {
        "sft": 40, "think": 20, "preference": 20}, "quarantined": {"duplicate": 9, "no_assistant_turn": 1, "bad_role": 1,
        "wrong_type": 1, "unknown_format": 1, "not_json": 1}, "beyond_max_rows": 0}


def test_an_error_converting_a_record_is_raised_only_when_the_read_reaches_it(tmp_path, in_workers):
    lines = [json.dumps(r).encode() for r in sft_records(30)]
    lines.insert(12, json.dumps({"messages": [{"from": ["not", "hashable"], "value": "hi"}]}).encode())
    (tmp_path / "bad.jsonl").write_bytes(b"\n".join(lines))
    capped = [TrainingSource(str(tmp_path / "bad.jsonl"), max_rows=5)]
    for switch in (lambda: None, in_workers):
        switch()
        with pytest.raises(TypeError, match="unhashable"):
            ingest_training_data([TrainingSource(str(tmp_path / "bad.jsonl"))], tmp_path / "rows.parquet")
        assert _everything(capped, tmp_path / "capped.parquet")["outcomes"][0]["beyond_max_rows"] == 26


@pytest.mark.parametrize("record", [
    {"messages": [{"role": "assistant", "content": "<think>a</think>b"}]},
    {"messages": [{"role": "assistant", "content": "\u003cthink>a</think>b"}]},
    {"messages": [{"role": "assistant", "content": "b", "reasoning": "a"}]},
    {"messages": [{"role": "assistant", "content": "b", "reasoning": None}], "x": "reasoning"},
    {"messages": [{"role": "assistant", "content": "b"}], 'k"reasoning': "a"},
    {"messages": [{"role": "assistant", "content": "plain"}]},
])
def test_kind_from_the_json_text_is_the_kind_from_the_record(record):
    for text in (json.dumps(record), json.dumps(record, ensure_ascii=False, separators=(",", ":"))):
        assert detect_kind(json.loads(text), None, text) == detect_kind(record)
