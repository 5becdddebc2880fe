"""ObjectTableStore against a real S3-compatible server (moto, tests/fixtures/s3.py): the DuckDBStore operations over
Parquet objects, what one host writes another reads from an empty home, and a writer killed between its upload and
its pointer leaves the previous version current (issue #21)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from resources.duckdb_store import MissingDatabase, MissingTable
from resources.object_checkpoints import ObjectStoreUnavailable
from resources.object_tables import ObjectTableStore
from tests.fixtures.s3 import s3_with_bucket

pytestmark = pytest.mark.slow
BUCKET = "lineage"
URL = f"s3://{BUCKET}/tables"


@pytest.fixture(scope="module")
def s3():
    with s3_with_bucket(BUCKET) as server:
        yield server


@pytest.fixture
def url(s3, request):
    """A prefix of its own per test, in the shared bucket."""
    return f"{URL}/{request.node.name}"


def bucket():
    import fsspec

    return fsspec.filesystem("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], use_listings_cache=False)


def host(tmp_path: Path, name: str, url: str) -> ObjectTableStore:
    """One machine: its own empty home, the shared bucket."""
    return ObjectTableStore(url=url, cache_dir=str(tmp_path / name / "table_cache"))


def test_tables_written_on_one_host_are_read_on_another_with_an_empty_home(url, tmp_path):
    writer, reader = host(tmp_path, "a", url), host(tmp_path, "b", url)
    assert reader.tables() == set()
    corpus = [{"problem_id": "p1", "text": "one"}, {"problem_id": "p2", "text": "two"}]
    assert writer.replace_table("raw_corpus", corpus) == 2
    assert not (tmp_path / "b").exists()
    assert reader.rows("raw_corpus") == corpus
    assert reader.count("raw_corpus") == 2 and reader.tables() == {"raw_corpus"}
    assert reader.query("SELECT text FROM raw_corpus WHERE problem_id = ?", ["p2"]) == [{"text": "two"}]
    [version] = bucket().find(f"{url.removeprefix('s3://')}/versions/raw_corpus")
    assert (tmp_path / "b" / "table_cache" / "versions" / "raw_corpus" / Path(version).name).is_file()  # cached

    writer.replace_table("raw_corpus", [{"problem_id": "p3", "text": "three"}])  # a new object, then the pointer
    assert reader.rows("raw_corpus") == [{"problem_id": "p3", "text": "three"}]
    assert len(bucket().find(f"{url.removeprefix('s3://')}/versions/raw_corpus")) == 2  # the old one stays
    writer.replace_table("on_policy_traces", [], columns=["problem_id", "trace"])  # empty: the columns still there
    assert reader.rows("on_policy_traces") == [] and reader.query(
        "SELECT column_name AS c FROM information_schema.columns WHERE table_name = 'on_policy_traces'") == [
        {"c": "problem_id"}, {"c": "trace"}]
    with pytest.raises(ValueError, match="from no rows without columns"):
        writer.replace_table("on_policy_traces", [])


def test_slices_are_replaced_one_at_a_time_and_read_as_one_table(url, tmp_path):
    writer, reader = host(tmp_path, "a", url), host(tmp_path, "b", url)
    writer.replace_rows("eval_generations", [{"variant": "base", "item": 1, "text": "b1"},
                                             {"variant": "base", "item": 2, "text": "b2"}], "variant", "base")
    writer.replace_rows("eval_generations", [{"variant": "instruct", "item": 1, "text": "i1", "fingerprint": "f"}],
                        "variant", "instruct")  # a newer writer added a column: older slices read NULL
    writer.replace_rows("eval_generations", [], "variant", "reasoning", columns=["variant", "item", "text"])
    assert reader.query("SELECT variant, item, text, fingerprint FROM eval_generations ORDER BY variant, item") == [
        {"variant": "base", "item": 1, "text": "b1", "fingerprint": None},
        {"variant": "base", "item": 2, "text": "b2", "fingerprint": None},
        {"variant": "instruct", "item": 1, "text": "i1", "fingerprint": "f"}]
    writer.replace_rows("eval_generations", [{"variant": "base", "item": 3, "text": "b3"}], "variant", "base")
    assert reader.query("SELECT DISTINCT item FROM eval_generations WHERE variant = ?", ["base"]) == [{"item": 3}]
    assert {r["name"] for r in reader.query("SELECT column_name AS name FROM information_schema.columns "
                                            "WHERE table_name = ?", ["eval_generations"])} == \
        {"variant", "item", "text", "fingerprint"}

    # slices written by different hosts at the same moment (eval variants on separate machines) all land
    hosts = [host(tmp_path, f"h{i}", url) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: hosts[i].replace_rows("training_data_contamination", [{"dataset": f"d{i}", "n": i}],
                                                      "dataset", f"d{i}"), range(4)))
    assert reader.query("SELECT dataset, n FROM training_data_contamination ORDER BY n") == [
        {"dataset": f"d{i}", "n": i} for i in range(4)]

    with pytest.raises(ValueError, match="written in slices"):
        writer.replace_table("eval_generations", [{"variant": "x"}])
    with pytest.raises(ValueError, match="sliced by 'variant', not 'item'"):
        writer.replace_rows("eval_generations", [{"variant": "x", "item": 9}], "item", "9")
    writer.replace_table("eval_scores", [{"variant": "base"}])
    with pytest.raises(ValueError, match="written whole"):
        writer.replace_rows("eval_scores", [{"variant": "base"}], "variant", "base")


def test_publish_records_the_version_with_the_rows_and_missing_tables_name_their_asset(url, tmp_path):
    writer, reader = host(tmp_path, "a", url), host(tmp_path, "b", url)
    assert reader.published_rows("raw_problems") == ([], None)
    writer.publish("raw_problems", "v1", "run-1", {"raw_problems": writer.frame("raw_problems", [{"id": "p1"}]),
                                                   "raw_quarantine": writer.frame("raw_quarantine", [], ["reason"])})
    assert reader.published_rows("raw_problems") == ([{"id": "p1"}], ("v1", "run-1"))
    assert reader.published_rows("raw_problems", "SELECT count(*) AS n FROM raw_problems") == \
        ([{"n": 1}], ("v1", "run-1"))
    assert reader.query("SELECT asset, data_version, dagster_run_id FROM table_versions") == [
        {"asset": "raw_problems", "data_version": "v1", "dagster_run_id": "run-1"}]
    writer.replace_table("raw_corpus", [{"text": "t"}])
    assert reader.published_rows("raw_corpus") == ([], None)  # written, but never published with a version

    parquet = tmp_path / "big" / "v2.parquet"  # a file too large to hold as rows is published as it is
    parquet.parent.mkdir()
    import duckdb

    duckdb.execute(f"COPY (SELECT 'p' || range AS id FROM range(1000)) TO '{parquet}' (FORMAT parquet)")
    writer.publish("raw_training_data", "t1", "run-2", {"raw_training_data": parquet})
    assert reader.published_rows("raw_training_data", "SELECT count(*) AS n FROM raw_training_data") == \
        ([{"n": 1000}], ("t1", "run-2"))
    assert {r["asset"] for r in reader.rows("table_versions")} == {"raw_problems", "raw_training_data"}
    assert parquet.exists()

    with pytest.raises(MissingTable, match=f"table 'sft_dataset' is not in {url} .*current/sft_dataset.json.*"
                                           "written by asset sft_dataset: materialize that first"):
        reader.query("SELECT * FROM raw_corpus JOIN sft_dataset USING (text)")
    with pytest.raises(MissingTable, match="'eval_generations' .* asset eval_base, eval_instruct or eval_reasoning"):
        reader.count("eval_generations")
    elsewhere = ObjectTableStore(url="s3://no-such-bucket/tables", cache_dir=str(tmp_path / "c"))
    with pytest.raises(MissingDatabase, match="bucket 'no-such-bucket' of s3://no-such-bucket/tables does not exist"):
        elsewhere.rows("raw_corpus")
    with pytest.raises(ObjectStoreUnavailable, match="bucket 'no-such-bucket' does not exist"):
        elsewhere.replace_table("raw_corpus", [{"text": "t"}])
    key = bucket().find(f"{url.removeprefix('s3://')}/versions/raw_corpus")[0]
    bucket().rm_file(key)  # a version deleted under its pointer (by hand, a lifecycle rule): named, not a crash
    with pytest.raises(MissingTable, match=f"s3://{key} is gone .* rematerialize asset raw_corpus"):
        host(tmp_path, "c", url).rows("raw_corpus")


WRITER = """
import os, sys
from pathlib import Path
import pyarrow as pa, pyarrow.parquet as pq
from resources.object_tables import ObjectTableStore
store = ObjectTableStore(url=sys.argv[1], cache_dir=sys.argv[2])
big = Path(sys.argv[2]) / "big.parquet"  # incompressible, so its upload takes a while after the small one's
big.parent.mkdir(parents=True)
pq.write_table(pa.table({"blob": [os.urandom(1 << 20) for _ in range(int(sys.argv[3]))]}), big, compression="none")
store.publish("raw_problems", "v2", "run-2", {"raw_problems": store.frame("raw_problems", [{"id": "new"}]),
                                              "raw_quarantine": big})
"""


def test_a_writer_killed_between_upload_and_pointer_leaves_the_previous_version_current(url, tmp_path):
    first = host(tmp_path, "a", url)
    first.publish("raw_problems", "v1", "run-1", {"raw_problems": first.frame("raw_problems", [{"id": "old"}]),
                                                  "raw_quarantine": first.frame("raw_quarantine", [{"blob": b"q"}])})
    versions = f"{url.removeprefix('s3://')}/versions/raw_problems/"
    process = subprocess.Popen([sys.executable, "-c", WRITER, url, str(tmp_path / "killed"), "64"],
                               cwd=Path(__file__).resolve().parents[2], env=os.environ.copy())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(bucket().find(versions)) < 2 and process.poll() is None:
        time.sleep(0.02)
    assert process.poll() is None, f"the writer ended ({process.returncode}) before it could be killed mid-publish"
    os.kill(process.pid, signal.SIGKILL)  # the writing host dies: v2's raw_problems is uploaded, no pointer moved
    process.wait()
    assert len(bucket().find(versions)) == 2, "the writer did not get to upload raw_problems in 120 s"

    reader = host(tmp_path, "b", url)
    assert reader.published_rows("raw_problems") == ([{"id": "old"}], ("v1", "run-1"))
    assert reader.rows("raw_quarantine") == [{"blob": b"q"}]
    assert reader.query("SELECT data_version FROM table_versions") == [{"data_version": "v1"}]

    first.publish("raw_problems", "v2", "run-3", {"raw_problems": first.frame("raw_problems", [{"id": "new"}]),
                                                  "raw_quarantine": first.frame("raw_quarantine", [], ["blob"])})
    assert reader.published_rows("raw_problems") == ([{"id": "new"}], ("v2", "run-3"))
