"""Published checkpoints carry a content manifest: a real ``save_pretrained`` model whose files are
changed, truncated, removed or added after publishing is refused by name on load and before reuse."""

import hashlib
import json
import os
import subprocess
import sys
import time

import dagster as dg
import pytest

from assets._training import TrainOverrides, build_checkpoint
from resources import CheckpointStore, MLflowTracking
from resources.checkpoint_store import MANIFEST_FILE, RACY_WINDOW_NS, CheckpointCorrupted, verify_checkpoint

FINGERPRINT = "f00dfacef00dface"
CORRUPTION_BYTES = 100 * 1024


def _save_tiny_model(directory) -> None:
    """A real Qwen3 with ~0.5 MB of safetensors weights (enough room for 100 kB of corruption)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(vocab_size=2048, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=32, tie_word_embeddings=True)
    Qwen3ForCausalLM(config).save_pretrained(directory)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_model")
    _save_tiny_model(directory)
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def _publish(store: CheckpointStore, files: dict, name: str = "base_checkpoint", version: str = FINGERPRINT):
    with store.publish(name, version) as staging:
        for file_name, data in files.items():
            (staging / file_name).write_bytes(data)
        (staging / "lineage.json").write_text(json.dumps({"fingerprint": version}))
    return store.current(name)


def _overwrite_middle(path, size: int = CORRUPTION_BYTES) -> None:
    """Random bytes in place: the file keeps its size."""
    with open(path, "r+b") as handle:
        handle.seek(os.path.getsize(path) // 2 - size // 2)
        handle.write(os.urandom(size))


def _reuse(store: CheckpointStore, tmp_path):
    """``build_checkpoint`` as an asset calls it, with a build that must not run (inputs are unchanged)."""
    def must_not_train(staging, run):
        raise AssertionError("retrained although the fingerprint is unchanged")

    mlflow = MLflowTracking(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "a"))
    return build_checkpoint(dg.build_asset_context(), "base_checkpoint", FINGERPRINT, {}, must_not_train, store,
                            mlflow)


def test_published_checkpoint_has_a_manifest_and_an_untouched_one_loads_and_is_reused(tmp_path, model_files):
    from transformers import AutoModelForCausalLM

    store = CheckpointStore(root=str(tmp_path / "checkpoints"))
    directory = _publish(store, model_files)
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    data = model_files["model.safetensors"]
    assert manifest["files"]["model.safetensors"] == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert sorted(manifest["files"]) == sorted([*model_files, "lineage.json"])
    assert AutoModelForCausalLM.from_pretrained(store.current("base_checkpoint")).num_parameters() > 0
    result = _reuse(store, tmp_path)
    assert result.metadata["reused"] is True and store.current("base_checkpoint") == directory


def test_random_bytes_inside_the_weights_fail_loading_naming_the_file(tmp_path, model_files):
    store = CheckpointStore(root=str(tmp_path / "checkpoints"))
    directory = _publish(store, model_files)
    _overwrite_middle(directory / "model.safetensors")
    with pytest.raises(CheckpointCorrupted, match=rf"base_checkpoint version {FINGERPRINT}: model\.safetensors "
                       r"sha256 mismatch \(expected [0-9a-f]{64}, found [0-9a-f]{64}\); delete ") as caught:
        store.current("base_checkpoint")
    assert str(directory) in str(caught.value)


def test_truncated_weights_refuse_reuse_naming_the_file(tmp_path, model_files):
    store = CheckpointStore(root=str(tmp_path / "checkpoints"))
    directory = _publish(store, model_files)
    weights = directory / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    with pytest.raises(CheckpointCorrupted, match=r"base_checkpoint version \w+: model\.safetensors size mismatch"):
        _reuse(store, tmp_path)


def test_a_damaged_earlier_version_fails_before_retraining_and_publishing_over_it(tmp_path, model_files):
    """Going back to an earlier fingerprint whose directory was damaged: training again would publish into
    the existing (kept) directory, so the step fails first, and a publish onto it fails too."""
    store = CheckpointStore(root=str(tmp_path / "checkpoints"))
    earlier = _publish(store, model_files)
    _publish(store, model_files, version="0123456789abcdef")  # now current
    (earlier / "generation_config.json").unlink()
    with pytest.raises(CheckpointCorrupted, match=rf"version {FINGERPRINT}: generation_config\.json missing"):
        _reuse(store, tmp_path)
    with pytest.raises(CheckpointCorrupted, match=r"generation_config\.json missing"):
        _publish(store, model_files)
    assert store.current("base_checkpoint").name == "0123456789abcdef"


@pytest.mark.parametrize("change", ["missing", "extra", "config", "no_manifest"])
def test_missing_extra_or_changed_files_and_a_missing_manifest_are_refused(tmp_path, model_files, change):
    store = CheckpointStore(root=str(tmp_path / "checkpoints"))
    directory = _publish(store, model_files)
    if change == "missing":
        (directory / "config.json").unlink()
        expected = r"config\.json missing"
    elif change == "extra":
        (directory / "tokenizer.json").write_text("{}")
        expected = r"tokenizer\.json not in the manifest"
    elif change == "config":
        config = directory / "config.json"
        config.write_text(config.read_text().replace('"hidden_size": 64', '"hidden_size": 65'))
        expected = r"config\.json sha256 mismatch"  # same length: only the hash tells
    else:
        (directory / MANIFEST_FILE).unlink()
        expected = rf"no {MANIFEST_FILE}.*delete {directory} and rematerialize"
    with pytest.raises(CheckpointCorrupted, match=rf": {expected}"):
        store.current("base_checkpoint")


def test_same_size_overwrite_after_a_cached_verification_is_still_caught(tmp_path, model_files):
    """The per-process cache skips re-hashing unchanged files; an in-place overwrite that keeps the size
    and even restores the modification time still changes the inode's ctime, so it is hashed again."""
    store = CheckpointStore(root=str(tmp_path / "checkpoints"))
    directory = _publish(store, model_files)
    time.sleep(RACY_WINDOW_NS / 1e9 + 0.2)  # files younger than the window are never cached
    assert verify_checkpoint(directory, "base_checkpoint") > 0  # hashed, now cached
    assert verify_checkpoint(directory, "base_checkpoint") == 0  # cache hit: nothing re-read
    weights = directory / "model.safetensors"
    before = weights.stat()
    _overwrite_middle(weights)
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert weights.stat().st_size == before.st_size and weights.stat().st_mtime_ns == before.st_mtime_ns
    with pytest.raises(CheckpointCorrupted, match=r"model\.safetensors sha256 mismatch"):
        store.current("base_checkpoint")
    # A new step process starts with an empty cache and refuses it too.
    probe = (f"from resources import CheckpointStore\nCheckpointStore(root={str(tmp_path / 'checkpoints')!r})"
             ".current('base_checkpoint')")
    fresh = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=os.getcwd(),
                           env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert fresh.returncode != 0 and "model.safetensors sha256 mismatch" in fresh.stderr, fresh.stderr[-2000:]


def test_eval_report_style_directories_get_manifests_too(tmp_path):
    store = CheckpointStore(root=str(tmp_path))
    with store.publish("eval_report", "scores1") as staging:
        (staging / "report.md").write_text("# report")
        (staging / "plots").mkdir()
        (staging / "plots" / "a.png").write_bytes(b"\x89PNG")
    directory = store.current("eval_report")
    assert sorted(json.loads((directory / MANIFEST_FILE).read_text())["files"]) == ["plots/a.png", "report.md"]
    (directory / "plots" / "a.png").write_bytes(b"\x89PNX")
    with pytest.raises(CheckpointCorrupted, match=r"eval_report version scores1: plots/a\.png sha256 mismatch"):
        store.current("eval_report")


def test_a_manifest_entry_without_size_or_sha256_is_refused_as_corrupted(tmp_path):
    """Before, a well-formed JSON manifest with a broken entry raised a bare KeyError."""
    store = CheckpointStore(root=str(tmp_path))
    with store.publish("eval_report", "scores1") as staging:
        (staging / "report.md").write_text("# report")
    manifest = store.current("eval_report") / MANIFEST_FILE
    manifest.write_text(json.dumps({"files": {"report.md": {"bytes": 8}}}))
    with pytest.raises(CheckpointCorrupted, match=r"unreadable .*report\.md is not \{size, sha256\}"):
        store.current("eval_report")


@pytest.mark.parametrize("field", ["max_steps", "batch_size", "max_length", "gradient_accumulation_steps",
                                   "learning_rate"])
def test_train_overrides_refuse_non_positive_values(field):
    with pytest.raises(ValueError, match=field):
        TrainOverrides(**{field: -5})
    with pytest.raises(ValueError, match=field):
        TrainOverrides(**{field: 0})
    assert getattr(TrainOverrides(**{field: 3}), field) == 3
    assert getattr(TrainOverrides(), field) is None
