"""Reading a user's sources: every format through one path, every record kept or quarantined, in bounded batches."""

import json

import pyarrow.parquet as pq
import pytest

from pipelines.data.ingest import RawFileChanged
from pipelines.data.records import SourceNotFound
from pipelines.data.user_data import TrainingSource, chat_files, ingest_training_data, rejection_problem
from tests.fixtures.user_data import (BAD_SFT, preference_records, sft_records, think_records, write_jsonl,
                                      write_parquet)


def _rows(result):
    return pq.read_table(result.rows_file).to_pylist()


def test_every_well_formed_row_is_kept_and_every_bad_line_quarantined_with_file_line_and_reason(tmp_path):
    good, bad = write_jsonl(tmp_path / "sft.jsonl", sft_records(50), BAD_SFT)
    think = write_parquet(tmp_path / "think.parquet", think_records(50))
    pairs = write_parquet(tmp_path / "pairs.parquet", preference_records(50, "implicit"))
    sources = [TrainingSource(str(tmp_path / name)) for name in ("sft.jsonl", "think.parquet", "pairs.parquet")]
    result = ingest_training_data(sources, tmp_path / "out" / "rows.parquet")
    assert dict(result.kept) == {"sft": good, "think": think, "preference": pairs}  # 100% of the good rows
    assert len(result.quarantined) == bad and result.records == good + bad + think + pairs
    assert {(q["file"], q["kind"]) for q in result.quarantined} == {
        (str(tmp_path / "sft.jsonl"), kind) for kind in ("no_assistant_turn", "bad_role", "wrong_type",
                                                         "unknown_format", "not_json")}
    assert all(q["line"] >= 1 and q["reason"] for q in result.quarantined)
    rows = _rows(result)
    assert len(rows) == good + think + pairs
    assert sum(r["messages"] is not None for r in rows if r["kind"] == "sft") == sum(
        1 for i in range(50) if i % 3 == 0 or i % 4 == 0)  # system prompts and earlier turns kept
    assert {a["path"] for a in result.audit()} == {str(tmp_path / n) for n in ("sft.jsonl", "think.parquet", "pairs.parquet")}
    assert rejection_problem(result.outcomes, limit=0.05) is None  # 5 of 155
    assert "over the 1.0% limit" in rejection_problem(result.outcomes, limit=0.01)


def test_csv_json_arrays_save_to_disk_and_folders_read_the_same_rows(tmp_path):
    import datasets

    records = [{"prompt": f"{i}+1?", "completion": str(i + 1)} for i in range(20)]
    (tmp_path / "a.json").write_text(json.dumps(records))
    (tmp_path / "b.csv").write_text("prompt,completion\n" + "".join(f"{i}+1?,{i + 1}\n" for i in range(20)))
    datasets.Dataset.from_list(records).save_to_disk(str(tmp_path / "saved"))
    write_jsonl(tmp_path / "folder" / "train.jsonl", records)
    write_jsonl(tmp_path / "folder" / "test.jsonl", records[:3])  # another split: not read
    for name in ("a.json", "b.csv", "saved", "folder"):
        result = ingest_training_data([TrainingSource(str(tmp_path / name), kind="sft")], tmp_path / f"{name}.parquet")
        assert [(r["prompt"], r["completion"]) for r in _rows(result)] == [(r["prompt"], r["completion"]) for r in records], name
        assert result.audit() and all(len(a["sha256"]) == 64 for a in result.audit())


def test_a_cached_hub_dataset_is_read_offline_and_its_revision_recorded(tmp_path, monkeypatch):
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "datasets--someone--chat-set"
    write_parquet(repo / "snapshots" / revision / "data" / "train-00000-of-00001.parquet", preference_records(8, "explicit"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    result = ingest_training_data([TrainingSource("someone/chat-set")], tmp_path / "rows.parquet")
    assert dict(result.kept) == {"preference": 8}
    assert {(a["dataset"], a["revision"]) for a in result.audit()} == {("someone/chat-set", revision)}
    with pytest.raises(SourceNotFound, match="not in the local Hugging Face cache"):
        ingest_training_data([TrainingSource("someone/missing")], tmp_path / "none.parquet")


def test_max_rows_mixes_sources_and_counts_what_it_left_out(tmp_path):
    write_jsonl(tmp_path / "big.jsonl", sft_records(30))
    write_jsonl(tmp_path / "small.jsonl", think_records(6))
    result = ingest_training_data([TrainingSource(str(tmp_path / "big.jsonl"), max_rows=10),
                                   TrainingSource(str(tmp_path / "small.jsonl"))], tmp_path / "rows.parquet")
    assert dict(result.kept) == {"sft": 10, "think": 6}
    assert [o.beyond_max_rows for o in result.outcomes] == [20, 0]


def test_duplicates_are_quarantined_as_duplicates_of_the_first(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", sft_records(5) + sft_records(2))
    result = ingest_training_data([TrainingSource(str(tmp_path / "a.jsonl"))], tmp_path / "rows.parquet")
    assert dict(result.kept) == {"sft": 5}
    assert [q["reason"] for q in result.quarantined] == [f"duplicate of {tmp_path / 'a.jsonl'}:{n}" for n in (1, 2)]


def test_a_source_that_gives_no_row_fails_the_check(tmp_path):
    write_jsonl(tmp_path / "bad.jsonl", [], BAD_SFT)
    (tmp_path / "empty.jsonl").write_bytes(b"")
    result = ingest_training_data([TrainingSource(str(tmp_path / n)) for n in ("bad.jsonl", "empty.jsonl")],
                                  tmp_path / "rows.parquet")
    assert rejection_problem(result.outcomes, limit=1.0) == (
        f"source(s) with no usable row: {tmp_path / 'bad.jsonl'}, {tmp_path / 'empty.jsonl'}")


def test_a_file_changed_after_its_snapshot_fails_the_read(tmp_path):
    path = tmp_path / "pairs.parquet"
    write_parquet(path, preference_records(4, "explicit"))
    with pytest.raises(RawFileChanged):
        ingest_training_data([TrainingSource(str(path))], tmp_path / "rows.parquet",
                             expected_sha256={str(path): "0" * 64})


def test_chat_files_are_told_apart_from_problem_files(tmp_path):
    write_jsonl(tmp_path / "chat.jsonl", sft_records(3))
    write_jsonl(tmp_path / "gsm8k.jsonl", [{"question": "1+1?", "answer": "#### 2"}], [b"garbage"])
    write_parquet(tmp_path / "pairs.parquet", preference_records(2, "explicit"))
    paths = [str(tmp_path / n) for n in ("chat.jsonl", "gsm8k.jsonl", "pairs.parquet")]
    assert chat_files(paths) == [paths[0], paths[2]]
