"""Published directories appear atomically, across real processes: a reader polling ``current`` during
publishes only ever sees complete versions; a writer killed mid-publish leaves ``current`` intact;
concurrent publishes of one version both succeed."""

import hashlib
import json
import multiprocessing
import os
import signal
import threading

from resources import CheckpointStore
from resources.checkpoint_store import MANIFEST_FILE

FILES_PER_VERSION = 20
FILE_BYTES = 64 * 1024
VERSIONS = 15
JOIN_TIMEOUT_S = 300
RACE_ROUNDS = 40


def _write_version(directory, version: str) -> None:
    """Files first, then a manifest of their hashes: a complete directory is one whose manifest checks out."""
    manifest = {}
    for index in range(FILES_PER_VERSION):
        data = hashlib.sha256(f"{version}-{index}".encode()).digest() * (FILE_BYTES // 32)
        (directory / f"shard-{index:02d}.bin").write_bytes(data)
        manifest[f"shard-{index:02d}.bin"] = hashlib.sha256(data).hexdigest()
    (directory / "manifest.json").write_text(json.dumps({"version": version, "files": manifest}))


def _is_complete(directory) -> bool:
    manifest = json.loads((directory / "manifest.json").read_text())
    if manifest["version"] != directory.name:
        return False
    present = sorted(p.name for p in directory.iterdir() if p.name not in ("manifest.json", MANIFEST_FILE))
    return present == sorted(manifest["files"]) and all(
        hashlib.sha256((directory / name).read_bytes()).hexdigest() == digest
        for name, digest in manifest["files"].items())


def _publisher(root: str, versions: list[str]) -> None:
    store = CheckpointStore(root=root)
    for version in versions:
        with store.publish("model", version) as staging:
            _write_version(staging, version)


def _dies_mid_publish(root: str, version: str) -> None:
    with CheckpointStore(root=root).publish("model", version) as staging:
        (staging / "shard-00.bin").write_bytes(b"half")
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no exception handler: like an OOM kill


def _spawn(target, *args):
    process = multiprocessing.get_context("spawn").Process(target=target, args=args)
    process.start()
    return process


def test_reader_polling_during_publishes_never_sees_a_partial_directory(tmp_path):
    store = CheckpointStore(root=str(tmp_path))
    _publisher(str(tmp_path), ["v00"])
    writer = _spawn(_publisher, str(tmp_path), [f"v{i:02d}" for i in range(1, VERSIONS + 1)])
    seen = []
    while writer.is_alive():
        current = store.current("model")
        assert _is_complete(current), f"partial directory visible: {current}"
        seen.append(current.name)
    writer.join(JOIN_TIMEOUT_S)
    assert writer.exitcode == 0
    assert store.current("model").name == f"v{VERSIONS:02d}" and _is_complete(store.current("model"))
    assert len(seen) > VERSIONS  # the reader really polled while the writer published


def test_writer_killed_mid_publish_leaves_the_previous_version_current(tmp_path):
    store = CheckpointStore(root=str(tmp_path))
    _publisher(str(tmp_path), ["v1"])
    writer = _spawn(_dies_mid_publish, str(tmp_path), "v2")
    writer.join(JOIN_TIMEOUT_S)
    assert writer.exitcode == -signal.SIGKILL
    assert store.current("model").name == "v1" and _is_complete(store.current("model"))
    assert not (tmp_path / "model" / "versions" / "v2").exists()
    assert len(list((tmp_path / "model").glob(".staging-v2-*"))) == 1  # left hidden, never current
    _publisher(str(tmp_path), ["v2"])  # the rerun publishes normally
    assert store.current("model").name == "v2" and _is_complete(store.current("model"))


def test_concurrent_publishes_of_the_same_version_all_succeed(tmp_path):
    """Two runs training the same inputs publish the same fingerprint at the same moment (the rename race
    used to fail one of them about one round in five)."""
    for round_ in range(RACE_ROUNDS):
        store = CheckpointStore(root=str(tmp_path / str(round_)))
        barrier, errors = threading.Barrier(2), []

        def publish():
            try:
                with store.publish("model", "v1") as staging:
                    _write_version(staging, "v1")
                    barrier.wait()  # both reach the rename together
            except Exception as error:  # noqa: BLE001 - collected and asserted below
                errors.append(error)

        writers = [threading.Thread(target=publish) for _ in range(2)]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
        assert not errors, f"round {round_}: {errors}"
        assert store.current("model").name == "v1" and _is_complete(store.current("model"))
        assert not list((tmp_path / str(round_) / "model").glob(".staging-*"))
