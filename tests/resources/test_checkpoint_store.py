import pytest

from resources import CheckpointStore
from resources.checkpoint_store import CheckpointNotFound


def test_publish_makes_a_version_current(tmp_path):
    store = CheckpointStore(root=str(tmp_path))
    with pytest.raises(CheckpointNotFound, match="materialize the 'model' asset"):
        store.current("model")
    with store.publish("model", "v1") as staging:
        (staging / "weights").write_text("one")
    assert (store.current("model") / "weights").read_text() == "one"
    with store.publish("model", "v2") as staging:
        (staging / "weights").write_text("two")
    assert store.current("model").name == "v2"
    assert (tmp_path / "model" / "versions" / "v1" / "weights").read_text() == "one"  # kept for lineage


def test_failed_training_leaves_the_current_checkpoint_untouched(tmp_path):
    store = CheckpointStore(root=str(tmp_path))
    with store.publish("model", "v1") as staging:
        (staging / "weights").write_text("good")
    with pytest.raises(RuntimeError):
        with store.publish("model", "v2") as staging:
            (staging / "weights").write_text("half")
            raise RuntimeError("killed mid-write")
    assert (store.current("model") / "weights").read_text() == "good"
    assert not list((tmp_path / "model").glob(".staging-*"))
    assert not (tmp_path / "model" / "versions" / "v2").exists()
