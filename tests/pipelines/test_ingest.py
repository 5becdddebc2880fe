import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.data.ingest import UTF8_BOM, RawFileChanged, ingest_jsonl

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


# --- integrity of the read (issue #18) -------------------------------------------------------------------

def _good_lines(n: int, tag: str = "") -> list[bytes]:
    return [json.dumps({"question": f"{tag}Bo has {i} cats and gets 1 more. How many?",
                        "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"}).encode() for i in range(n)]


def _when_parsing_starts(action):
    """Run ``action`` once, at the first ``json.loads`` of the read (line 1 read, the rest not yet): a real
    writer acting on the file in the middle of the read, deterministically, without touching ingest."""
    fired = []

    def hook(frame, event, arg):
        if event == "call" and frame.f_code is json.loads.__code__ and not fired:
            fired.append(True)
            action()
    return hook, fired


def _read_while(path, action, **kwargs):
    hook, fired = _when_parsing_starts(action)
    sys.setprofile(hook)
    try:
        return ingest_jsonl([path], **kwargs)
    finally:
        sys.setprofile(None)
        assert fired, "the writer never ran: the read did not parse any line"


def test_utf8_bom_before_the_first_line_is_accepted_and_still_hashed(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(UTF8_BOM + b"\n".join(_good_lines(2)) + b"\n")
    result = ingest_jsonl([path])
    assert [p.source_line for p in result.problems] == [1, 2] and result.quarantined == []
    assert result.files[0].sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_each_file_is_hashed_as_read_with_its_counts(tmp_path):
    train, held_out, empty = tmp_path / "train.jsonl", tmp_path / "test.jsonl", tmp_path / "more.jsonl"
    train.write_bytes(b"\n".join(_good_lines(3) + [b"not json"]))  # last line without a newline
    held_out.write_bytes(b"\n".join(_good_lines(2, "Held ")) + b"\n")
    empty.write_bytes(b"")
    result = ingest_jsonl([train, held_out, empty])
    assert [(Path(f.path).name, f.lines, f.kept, f.quarantined, f.bytes) for f in result.files] == [
        ("test.jsonl", 2, 2, 0, held_out.stat().st_size), ("train.jsonl", 4, 3, 1, train.stat().st_size),
        ("more.jsonl", 0, 0, 0, 0)]
    assert all(f.sha256 == hashlib.sha256(Path(f.path).read_bytes()).hexdigest() for f in result.files)
    assert result.empty_files == [str(empty)] and result.lines_read == 6


def test_a_file_rewritten_in_place_during_the_read_fails_the_read(tmp_path):
    """``cp new train.jsonl`` while it is read: truncated, then partly rewritten when the reader reaches
    the end. Read before this fix: a torn prefix passed as the file."""
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join(_good_lines(3000)) + b"\n")
    replacement = b"\n".join(_good_lines(3000, "New ")) + b"\n"

    def cp_mid_write():
        with open(path, "r+b") as handle:
            handle.truncate(0)
            handle.write(replacement[: len(replacement) // 10])
    with pytest.raises(RawFileChanged, match=rf"{path} changed while it was read.*retried on a stable file"):
        _read_while(path, cp_mid_write)


def test_a_file_replaced_during_the_read_fails_the_read(tmp_path):
    """``mv new train.jsonl`` while it is read: the reader finishes the old inode, the path now holds
    another file, so neither can be credited as what the path held."""
    path, new = tmp_path / "train.jsonl", tmp_path / "new.jsonl"
    path.write_bytes(b"\n".join(_good_lines(50)) + b"\n")
    new.write_bytes(b"\n".join(_good_lines(5, "New ")) + b"\n")
    with pytest.raises(RawFileChanged, match="inode"):
        _read_while(path, lambda: os.replace(new, path))


def test_a_snapshot_hash_catches_a_same_size_rewrite_during_the_read(tmp_path):
    """Same size, possibly the same mtime tick: only the hash of the bytes read can tell."""
    path = tmp_path / "train.jsonl"
    original = b"\n".join(_good_lines(3000)) + b"\n"
    path.write_bytes(original)
    expected = {str(path): hashlib.sha256(original).hexdigest()}

    def rewrite_the_tail():
        with open(path, "r+b") as handle:
            handle.seek(len(original) // 2)
            handle.write(original[len(original) // 2:].replace(b"cats", b"dogs"))
    with pytest.raises(RawFileChanged, match=f"sha256 before {expected[str(path)]} in the folder snapshot"):
        _read_while(path, rewrite_the_tail, expected_sha256=expected)


def test_over_long_line_boundaries_are_exact(tmp_path):
    limit = 64
    body = b'{"question": "' + b"q" * 40 + b'", "answer": "#### 1"}'
    assert len(body) > limit
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"a" * limit + b"\r\n" + b"b" * (limit + 1) + b"\n" + b"c" * (limit + 1) + b"\r\n"
                     + body + b"\n" + b"d" * limit + b"\n" + b"e" * (3 * limit))  # last line: no newline
    result = ingest_jsonl([path], max_line_bytes=limit)
    kinds = {q.line: (q.kind, q.reason.split(",")[0]) for q in result.quarantined}
    assert kinds == {1: ("not_json", kinds[1][1]), 2: ("too_long", "line is 65 bytes"),
                     3: ("too_long", "line is 65 bytes"), 4: ("too_long", f"line is {len(body)} bytes"),
                     5: ("not_json", kinds[5][1]), 6: ("too_long", f"line is {3 * limit} bytes")}
    assert result.lines_read == 6 == len(result.quarantined) + len(result.problems)
    assert result.files[0].bytes == path.stat().st_size


LONG_LINE_SCRIPT = """
import json, sys, tracemalloc
from pathlib import Path
from pipelines.data.ingest import ingest_jsonl
tracemalloc.start()
result = ingest_jsonl([Path(sys.argv[1])], max_line_bytes=1 << 20)
print(json.dumps({"peak": tracemalloc.get_traced_memory()[1], "lines_read": result.lines_read,
                  "kept": [p.source_line for p in result.problems],
                  "quarantined": [(q.line, q.kind, q.reason, len(q.raw)) for q in result.quarantined]}))
"""


def test_an_over_long_line_is_skipped_without_holding_it_in_memory(tmp_path):
    """A 64 MiB line with a 1 MiB limit: before this fix the read held the whole line (and a copy)."""
    path, line_bytes = tmp_path / "train.jsonl", 64 << 20
    good = _good_lines(2)
    with open(path, "wb") as handle:
        handle.write(good[0] + b'\n{"question": "')
        for _ in range(line_bytes >> 20):
            handle.write(b"x" * (1 << 20))
        handle.write(b'", "answer": "#### 1"}\n' + good[1] + b"\n")
    long_line = path.stat().st_size - len(good[0]) - len(good[1]) - 3
    out = subprocess.run([sys.executable, "-c", LONG_LINE_SCRIPT, str(path)], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2], timeout=300)
    measured = json.loads(out.stdout)
    assert measured["lines_read"] == 3 and measured["kept"] == [1, 3]
    assert measured["quarantined"] == [
        [2, "too_long", f"line is {long_line} bytes, over the {1 << 20}-byte limit", 500]]
    assert measured["peak"] < 8 << 20, f"peak {measured['peak'] >> 20} MiB for a {line_bytes >> 20} MiB line"
