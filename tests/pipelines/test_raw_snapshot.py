"""The raw stage reads exactly what its folder snapshot versioned, credits the audit with the bytes it
read, and reads nothing outside the watched folder (issue #18). Real files in ``tmp_path``."""

import hashlib
import json
import os

import pytest

from pipelines.data.ingest import RawFileChanged
from pipelines.data.raw import (FOLDER, JSONL, PathOutsideRawFolder, choose_source, load_raw_problems,
                                snapshot_folder, source_records)
from pipelines.profiles import PROFILES

DATA = PROFILES["smoke"].data


def _problems(n: int, tag: str = "") -> bytes:
    return b"".join(json.dumps({"question": f"{tag}Ida has {i} kites and makes 2 more. How many kites?",
                                "answer": f"{i} + 2 = {i + 2}\n#### {i + 2}"}).encode() + b"\n" for i in range(n))


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "raw_data"
    folder.mkdir()
    (folder / "train.jsonl").write_bytes(_problems(400))
    return folder


def _load_folder(snapshot, expected=True):
    paths = [f["path"] for f in snapshot.files]
    return load_raw_problems(FOLDER, DATA, paths, expected=snapshot if expected else None), paths


def test_a_file_replaced_after_the_snapshot_is_not_ingested(folder, tmp_path):
    snapshot = snapshot_folder(folder)
    new = tmp_path / "new.jsonl"
    new.write_bytes(_problems(10, "New "))
    os.replace(new, folder / "train.jsonl")
    before = snapshot.files[0]["sha256"]
    with pytest.raises(RawFileChanged, match=rf"{folder / 'train.jsonl'} changed while it was read "
                                             rf"\(sha256 before {before} in the folder snapshot, bytes read "
                                             rf"{_sha256(_problems(10, 'New '))}"):
        _load_folder(snapshot)


def test_a_file_rewritten_in_place_after_the_snapshot_is_not_ingested(folder):
    snapshot = snapshot_folder(folder)
    content = (folder / "train.jsonl").read_bytes()
    with open(folder / "train.jsonl", "r+b") as handle:  # same size, same inode: only the hash tells
        handle.write(content[:1000].replace(b"kites", b"boats"))
    with pytest.raises(RawFileChanged, match="train.jsonl changed while it was read"):
        _load_folder(snapshot)


def test_the_audit_credits_the_bytes_read_not_what_the_path_holds_afterwards(folder, tmp_path):
    """Before this fix ``source_records`` re-hashed the path: the new 10-line file got the 400 rows."""
    path, read = folder / "train.jsonl", _problems(400)
    result = load_raw_problems(JSONL, DATA, [str(path)])
    new = tmp_path / "new.jsonl"
    new.write_bytes(_problems(10, "New "))
    os.replace(new, path)
    [record] = source_records(result, JSONL, [str(path)], DATA)
    assert record == {"path": str(path), "sha256": _sha256(read), "bytes": len(read), "lines": 400, "rows": 400,
                      "quarantined": 0}


def test_a_snapshot_refuses_a_link_to_a_file_outside_the_folder(folder, tmp_path):
    secret = tmp_path / "passwd"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    (folder / "users.jsonl").symlink_to(secret)
    with pytest.raises(PathOutsideRawFolder, match=rf"users.jsonl resolves to {secret}, outside the folder"):
        snapshot_folder(folder)


def test_a_link_swapped_in_after_the_snapshot_is_refused_before_it_is_read(folder, tmp_path):
    secret = tmp_path / "passwd.jsonl"
    secret.write_bytes(_problems(3, "Secret "))
    snapshot = snapshot_folder(folder)
    (folder / "train.jsonl").unlink()
    (folder / "train.jsonl").symlink_to(secret)
    with pytest.raises(PathOutsideRawFolder, match="outside the folder"):
        _load_folder(snapshot)


def test_a_link_inside_the_folder_is_read_as_its_target(folder):
    (folder / "more.jsonl").symlink_to(folder / "train.jsonl")
    snapshot = snapshot_folder(folder)
    assert [(f["name"], f["path"]) for f in snapshot.files] == [
        ("more.jsonl", str(folder / "train.jsonl")), ("train.jsonl", str(folder / "train.jsonl"))]
    result, _ = _load_folder(snapshot)
    assert len(result.problems) == 400 and result.quarantine_counts() == {"duplicate": 400}


def test_a_folder_of_empty_files_reads_zero_lines_and_says_so(tmp_path):
    folder = tmp_path / "raw_data"
    folder.mkdir()
    for name in ("a.jsonl", "b.jsonl"):
        (folder / name).write_bytes(b"")
    snapshot = snapshot_folder(folder)
    assert choose_source(None, [f["path"] for f in snapshot.files]) == FOLDER  # files present: not silently the generator
    result, paths = _load_folder(snapshot)
    assert (result.lines_read, result.problems, result.quarantined) == (0, [], [])
    assert result.empty_files == paths
    assert [(r["lines"], r["bytes"], r["rows"], r["sha256"]) for r in source_records(result, FOLDER, paths, DATA)] \
        == [(0, 0, 0, _sha256(b""))] * 2
