import multiprocessing

import pytest

from resources import DuckDBStore


def test_replace_table_and_slices(tmp_path):
    store = DuckDBStore(path=str(tmp_path / "db" / "lineage.duckdb"))
    assert store.replace_table("t", [{"variant": "a", "x": 1}, {"variant": "b", "x": 2}]) == 2
    store.replace_rows("t", [{"variant": "a", "x": 10}, {"variant": "a", "x": 11}], "variant", "a")
    assert sorted((r["variant"], r["x"]) for r in store.rows("t")) == [("a", 10), ("a", 11), ("b", 2)]
    store.replace_table("t", [{"variant": "c", "x": 3}])
    assert store.count("t") == 1


def test_a_slice_with_a_new_column_widens_the_table(tmp_path):
    store = DuckDBStore(path=str(tmp_path / "lineage.duckdb"))
    store.replace_table("t", [{"variant": "a", "x": 1}, {"variant": "b", "x": 2}])
    store.replace_rows("t", [{"variant": "a", "x": 10, "fingerprint": "f1"}], "variant", "a")
    rows = {r["variant"]: r for r in store.rows("t")}
    assert rows["a"]["fingerprint"] == "f1" and rows["b"]["fingerprint"] is None and rows["b"]["x"] == 2


def test_empty_table_needs_columns(tmp_path):
    store = DuckDBStore(path=str(tmp_path / "lineage.duckdb"))
    store.replace_table("empty", [], columns=["file", "line"])
    assert store.count("empty") == 0 and "empty" in store.tables()
    with pytest.raises(ValueError, match="without columns"):
        store.replace_table("broken", [])


def _writer(path: str, worker: int, rows: int) -> None:
    store = DuckDBStore(path=path)
    for i in range(rows):
        store.replace_rows("shared", [{"worker": str(worker), "i": i}], "worker", f"{worker}-{i}")


def test_parallel_writer_processes_wait_instead_of_failing(tmp_path):
    path = str(tmp_path / "lineage.duckdb")
    DuckDBStore(path=path).replace_table("shared", [{"worker": "seed", "i": -1}])
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(path, w, 20)) for w in range(3)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
    assert [p.exitcode for p in workers] == [0, 0, 0]
    assert DuckDBStore(path=path).count("shared") == 1 + 3 * 20
