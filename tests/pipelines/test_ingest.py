import json

from pipelines.data.ingest import ingest_jsonl

GOOD = {"question": "Ann has 3 pens and buys 4. How many pens?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"}


def _write_lines(path, lines: list[bytes]) -> None:
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_malformed_lines_are_quarantined_with_file_line_and_reason(tmp_path):
    path = tmp_path / "train.jsonl"
    lines = [
        json.dumps(GOOD).encode(),                                                   # 1 kept
        b"{not json",                                                                # 2
        json.dumps({"question": "Where is the answer?"}).encode(),                   # 3 missing answer
        json.dumps({"question": "Q?", "answer": ""}).encode(),                       # 4 empty answer
        json.dumps({"question": "Q two?", "answer": "it is 5"}).encode(),            # 5 no ####
        json.dumps({"question": "Q three?", "answer": "#### five"}).encode(),        # 6 not a number
        json.dumps([1, 2]).encode(),                                                 # 7 not an object
        json.dumps({"question": 12, "answer": "#### 1"}).encode(),                   # 8 wrong type
        b"\xff\xfe broken bytes",                                                    # 9 invalid UTF-8
        b"",                                                                         # 10 blank
        json.dumps(GOOD).encode(),                                                   # 11 duplicate
        json.dumps({"question": "Tom has $1,200.", "answer": "so #### $1,250."}).encode(),  # 12 kept
    ]
    _write_lines(path, lines)
    result = ingest_jsonl([path])

    assert result.lines_read == len(lines)
    assert len(result.problems) + len(result.quarantined) == result.lines_read
    assert [p.source_line for p in result.problems] == [1, 12]
    assert result.problems[0].solution == "3 + 4 = 7"  # calculator annotations removed
    assert result.problems[1].answer == "1250"
    by_line = {q.line: q for q in result.quarantined}
    assert {line: q.kind for line, q in by_line.items()} == {
        2: "not_json", 3: "missing_field", 4: "empty_field", 5: "no_final_answer", 6: "non_numeric_answer",
        7: "not_object", 8: "wrong_type", 9: "invalid_utf8", 10: "blank", 11: "duplicate"}
    assert all(q.file == str(path) for q in result.quarantined)
    assert "'answer'" in by_line[3].reason and "train.jsonl:1" in by_line[11].reason
    assert result.quarantine_counts()["not_json"] == 1


def test_custom_field_names(tmp_path):
    path = tmp_path / "extra.jsonl"
    _write_lines(path, [json.dumps({"problem": "1 + 1?", "solution": "#### 2"}).encode()])
    result = ingest_jsonl([path], question_field="problem", answer_field="solution")
    assert [p.answer for p in result.problems] == ["2"]


def test_real_gsm8k_files_are_ingested_with_exact_accounting(gsm8k_dir):
    files = [gsm8k_dir / "train.jsonl", gsm8k_dir / "test.jsonl"]
    result = ingest_jsonl(files)
    total_lines = sum(len(f.read_bytes().splitlines()) for f in files)
    assert result.lines_read == total_lines
    assert len(result.problems) + len(result.quarantined) == total_lines
    splits = {s: sum(p.split == s for p in result.problems) for s in ("train", "test")}
    assert splits["train"] > 7000 and splits["test"] > 1200
    assert all(q.kind == "duplicate" for q in result.quarantined)  # the real files are well formed
    natalia = next(p for p in result.problems if p.question.startswith("Natalia sold clips"))
    assert natalia.answer == "72" and "<<" not in natalia.solution


def test_number_answer_format_for_other_math_sets(tmp_path):
    path = tmp_path / "other.jsonl"
    _write_lines(path, [json.dumps({"q": "2 + 2?", "a": 4}).encode(), json.dumps({"q": "Half of 7?", "a": "3.5"}).encode(),
                        json.dumps({"q": "Name?", "a": "Bob"}).encode(), json.dumps({"q": "Flag?", "a": True}).encode()])
    result = ingest_jsonl([path], question_field="q", answer_field="a", answer_format="number")
    assert [p.answer for p in result.problems] == ["4", "3.5"]
    assert [q.kind for q in result.quarantined] == ["non_numeric_answer", "wrong_type"]
