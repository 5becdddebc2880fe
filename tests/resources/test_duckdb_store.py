import multiprocessing
import re
import subprocess
import sys
import time

import dagster as dg
import duckdb
import pytest

from resources import DuckDBStore
from resources.duckdb_store import WRITTEN_BY, MissingDatabase, MissingTable


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


OPEN_FROM_ANOTHER_PROCESS = "import duckdb, sys; duckdb.connect(sys.argv[1]).close()"


def _another_process_can_open(path: str) -> bool:
    completed = subprocess.run([sys.executable, "-c", OPEN_FROM_ANOTHER_PROCESS, path], capture_output=True,
                               text=True, timeout=120)
    if completed.returncode and "lock" not in completed.stderr.lower():
        raise AssertionError(completed.stderr[-2000:])
    return completed.returncode == 0


def test_the_file_stays_open_between_operations_until_released(tmp_path):
    """The process holds the database between operations (so the next one skips loading it), and lets
    go when told (a step's end); with ``keep_open_s=0`` it never holds it."""
    path = str(tmp_path / "lineage.duckdb")
    store = DuckDBStore(path=path, keep_open_s=600)
    store.replace_table("t", [{"x": 1}])
    assert not _another_process_can_open(path)
    assert store.count("t") == 1  # reuses the held database
    store.close_kept_open()
    assert _another_process_can_open(path)
    DuckDBStore(path=path, keep_open_s=0).count("t")
    assert _another_process_can_open(path)


def test_an_idle_file_is_let_go_on_its_own(tmp_path):
    path = str(tmp_path / "lineage.duckdb")
    DuckDBStore(path=path, keep_open_s=0.2).replace_table("t", [{"x": 1}])
    deadline = time.monotonic() + 60  # a bound for a loaded machine, not a timing assertion
    while not _another_process_can_open(path):
        assert time.monotonic() < deadline, "the idle connection was never closed"
        time.sleep(0.1)


def _write_in_child(path: str) -> None:
    DuckDBStore(path=path).replace_rows("t", [{"x": -1}], "x", "-1")


def test_a_forked_child_opens_the_file_itself_rather_than_an_inherited_copy(tmp_path):
    path = str(tmp_path / "lineage.duckdb")
    store = DuckDBStore(path=path, keep_open_s=600)
    store.replace_table("t", [{"x": i} for i in range(1000)])
    child = multiprocessing.get_context("fork").Process(target=_write_in_child, args=(path,))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0
    assert store.count("t") == 1001  # the child's row is in the file


def test_a_dagster_step_releases_the_file_when_it_ends(tmp_path):
    path = str(tmp_path / "lineage.duckdb")

    @dg.asset
    def table(duckdb: DuckDBStore) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"rows": duckdb.replace_table("t", [{"x": 1}])})

    assert dg.materialize([table], resources={"duckdb": DuckDBStore(path=path, keep_open_s=600)}).success
    assert _another_process_can_open(path)


def test_reading_a_missing_file_names_it_and_the_asset_and_does_not_create_it(tmp_path):
    path = tmp_path / "lineage.duckdb"
    store = DuckDBStore(path=str(path))
    with pytest.raises(MissingDatabase, match=rf"{re.escape(str(path))} does not exist") as missing:
        store.rows("eval_generations")
    assert "asset eval_base, eval_instruct or eval_reasoning" in str(missing.value)
    with pytest.raises(MissingDatabase, match="table 'sft_dataset' is written by asset sft_dataset"):
        store.count("sft_dataset")
    with pytest.raises(MissingDatabase, match="raw_problems and downstream"):
        store.query("SELECT 1 AS one")
    assert store.tables() == set()
    assert not path.exists() and not list(tmp_path.iterdir())
    store.replace_table("t", [{"x": 1}])  # writes still create it
    assert path.exists() and store.count("t") == 1


def test_a_missing_table_is_named_with_the_asset_that_writes_it(tmp_path):
    store = DuckDBStore(path=str(tmp_path / "lineage.duckdb"))
    store.replace_table("t", [{"x": 1}])
    with pytest.raises(MissingTable, match="table 'eval_generations' is not in .*lineage.duckdb; it is written "
                                           "by asset eval_base, eval_instruct or eval_reasoning"):
        store.rows("eval_generations")
    with pytest.raises(MissingTable, match="table 'sft_dataset' .* by asset sft_dataset"):
        store.count("sft_dataset")
    with pytest.raises(MissingTable, match="table 'raw_quarantine' .* by asset raw_problems"):
        store.query("SELECT * FROM t JOIN raw_quarantine USING (x)")
    with pytest.raises(duckdb.BinderException):  # other errors are DuckDB's own
        store.query("SELECT missing_column FROM t")


def test_a_deleted_file_is_created_again_by_the_next_write(tmp_path):
    """Not written into the deleted file that a kept-open connection still holds (lost on close)."""
    path = tmp_path / "lineage.duckdb"
    store = DuckDBStore(path=str(path), keep_open_s=600)
    store.replace_table("t", [{"x": 1}])
    for file in tmp_path.iterdir():
        file.unlink()
    with pytest.raises(MissingDatabase):
        store.rows("t")
    store.replace_table("u", [{"x": 2}])
    assert path.exists()
    store.close_kept_open()
    assert DuckDBStore(path=str(path)).tables() == {"u"}


def test_the_writers_named_for_tables_are_assets_of_the_graph():
    from pipelines.definitions import defs

    assets = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    named = {name for writers in WRITTEN_BY.values() for name in writers}
    assert named and named <= assets, named - assets
    assert not set(WRITTEN_BY) & assets  # a table named after its asset needs no entry


def test_duckdb_memory_is_capped_in_each_process(tmp_path):
    """DuckDB's default (80% of RAM) let publishing a 1 GiB training file take the step past 2 GiB."""
    store = DuckDBStore(path=str(tmp_path / "lineage.duckdb"), memory_limit="300MB", keep_open_s=0)
    with store.connect() as connection:
        limit = connection.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert limit.endswith("MiB") and 250 < float(limit.split()[0]) < 300
