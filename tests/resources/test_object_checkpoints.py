"""CheckpointStore on an object-storage root, against a real S3-compatible server (moto, tests/fixtures/s3.py): what one
host publishes another reads into its own cache, a version is current only once its upload is complete, and damage in
the bucket is named by its URL (issue #21)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest

from resources.checkpoint_store import CheckpointCorrupted, CheckpointNotFound, CheckpointStore
from resources.object_checkpoints import ObjectStoreUnavailable
from tests.fixtures.s3 import s3_with_bucket

pytestmark = pytest.mark.slow
BUCKET = "lineage"
ROOT = f"s3://{BUCKET}/checkpoints"


@pytest.fixture(scope="module")
def s3():
    with s3_with_bucket(BUCKET) as server:
        yield server


def bucket():
    import fsspec

    return fsspec.filesystem("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], use_listings_cache=False)


def host(tmp_path: Path, name: str) -> CheckpointStore:
    """One machine: its own local cache, the shared bucket."""
    return CheckpointStore(root=ROOT, cache_dir=str(tmp_path / name / "cache"))


def publish(store: CheckpointStore, name: str, version: str, files: dict[str, bytes]) -> None:
    with store.publish(name, version) as staging:
        for relative, data in files.items():
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            (staging / relative).write_bytes(data)


def test_a_version_published_on_one_host_is_current_and_loadable_on_another(s3, tmp_path):
    writer, reader = host(tmp_path, "a"), host(tmp_path, "b")
    assert not reader.has_current("tok") and reader.current_version("tok") is None
    with pytest.raises(CheckpointNotFound, match=f"{ROOT}/tok/current"):
        reader.current("tok")
    publish(writer, "tok", "v1", {"tokenizer.json": b"{}", "sub/weights.bin": os.urandom(3000)})
    keys = {key.removeprefix(f"{BUCKET}/checkpoints/") for key in bucket().find(f"{BUCKET}/checkpoints/tok")}
    assert keys == {"tok/current", "tok/versions/v1/tokenizer.json", "tok/versions/v1/sub/weights.bin",
                    "tok/versions/v1/content_manifest.json"}
    assert bucket().cat_file(f"{BUCKET}/checkpoints/tok/current") == b"v1"

    assert reader.has_current("tok") and reader.current_version("tok") == "v1"
    loaded = reader.current("tok")
    assert loaded == tmp_path / "b" / "cache" / "tok" / "versions" / "v1" and loaded.name == "v1"
    written = writer.current("tok")  # the writer's cached copy, not downloaded again
    assert written.parent.parent.parent == tmp_path / "a" / "cache"
    assert (loaded / "sub/weights.bin").read_bytes() == (written / "sub/weights.bin").read_bytes()
    reader.verify_version("tok", "v1")

    publish(writer, "tok", "v2", {"tokenizer.json": b'{"v": 2}'})
    assert reader.current("tok").name == "v2" and (reader.current("tok") / "tokenizer.json").read_bytes() == b'{"v": 2}'
    assert reader.current("tok").parent == loaded.parent  # v1 stays cached beside it, keyed by version


def test_damage_in_the_bucket_is_named_by_its_url(s3, tmp_path):
    publish(host(tmp_path, "a"), "damaged", "v1", {"model.bin": b"x" * 100, "config.json": b"{}"})
    key = f"{BUCKET}/checkpoints/damaged/versions/v1/model.bin"
    bucket().pipe_file(key, b"y" * 100)  # same size, other bytes: only the download's SHA-256 can tell
    host(tmp_path, "b").verify_version("damaged", "v1")
    with pytest.raises(CheckpointCorrupted, match=r"model\.bin sha256 mismatch.*as downloaded from "
                                                  f"{ROOT}/damaged/versions/v1"):
        host(tmp_path, "b").current("damaged")
    assert not (tmp_path / "b" / "cache" / "damaged" / "versions" / "v1").exists()  # nothing half-verified kept
    bucket().pipe_file(key, b"y" * 99)
    with pytest.raises(CheckpointCorrupted, match=f"size of model.bin in {ROOT}/damaged/versions/v1 differs"):
        host(tmp_path, "c").verify_version("damaged", "v1")
    bucket().rm_file(key)
    with pytest.raises(CheckpointCorrupted, match=f"model.bin missing from {ROOT}/damaged/versions/v1"):
        host(tmp_path, "c").verify_version("damaged", "v1")


def test_publishing_to_a_missing_bucket_names_it(s3, tmp_path):
    store = CheckpointStore(root="s3://no-such-bucket/ckpt", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ObjectStoreUnavailable, match="bucket 'no-such-bucket' does not exist"):
        publish(store, "tok", "v1", {"a": b"1"})
    assert not store.has_current("tok")
    unreachable = CheckpointStore(root=ROOT, cache_dir=str(tmp_path / "cache"))
    with mock.patch.dict(os.environ, {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"}):
        with pytest.raises(ObjectStoreUnavailable, match=f"could not reach {ROOT}: EndpointConnectionError"):
            publish(unreachable, "tok", "v1", {"a": b"1"})
        with pytest.raises(ObjectStoreUnavailable, match=f"could not read {ROOT}/tok/current: EndpointConnection"):
            unreachable.current("tok")
    with pytest.raises(ValueError, match="set cache_dir"):
        CheckpointStore(root=ROOT).current("tok")


UPLOADER = """
import os, sys
from resources.checkpoint_store import CheckpointStore
store = CheckpointStore(root=sys.argv[1], cache_dir=sys.argv[2])
with store.publish("model", "v2") as staging:
    for index in range(400):
        (staging / f"shard-{index:03d}.bin").write_bytes(os.urandom(4096))
"""


def test_a_half_uploaded_version_is_never_current_and_the_next_publish_completes_it(s3, tmp_path):
    first = host(tmp_path, "a")
    publish(first, "model", "v1", {"shard-000.bin": b"one"})
    process = subprocess.Popen([sys.executable, "-c", UPLOADER, ROOT, str(tmp_path / "killed" / "cache")],
                               cwd=Path(__file__).resolve().parents[2], env=os.environ.copy())
    prefix = f"{BUCKET}/checkpoints/model/versions/v2/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(bucket().find(prefix)) < 20 and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)  # the uploading host dies mid-upload
    process.wait()
    uploaded = {key.rsplit("/", 1)[1] for key in bucket().find(prefix)}
    assert 20 <= len(uploaded) < 400 and "content_manifest.json" not in uploaded, len(uploaded)

    reader = host(tmp_path, "b")
    assert reader.current_version("model") == "v1"
    assert (reader.current("model") / "shard-000.bin").read_bytes() == b"one"
    with pytest.raises(CheckpointCorrupted, match="no .*versions/v2/content_manifest.json .*incomplete upload"):
        reader._objects().local_copy("model", "v2")
    reader.verify_version("model", "v2")  # incomplete is not damaged: a publish replaces it

    publish(first, "model", "v2", {"shard-000.bin": b"two"})  # the rerun: leftovers removed, then uploaded
    assert {key.rsplit("/", 1)[1] for key in bucket().find(prefix)} == {"shard-000.bin", "content_manifest.json"}
    assert reader.current_version("model") == "v2"
    assert (reader.current("model") / "shard-000.bin").read_bytes() == b"two"
