"""The audit table lineage_report shows: one line per upstream artifact and one per source it read.

Sources come in several shapes: raw problem files (rows, quarantined), user data and benchmark suite
files (records), published models (a reference, no counts). The table only knew the first, so a lineage
with `builtin_suites`, user training data or a published model failed `lineage_report` with KeyError 'rows'.
"""

from pipelines.lineage import format_table

SHA = "ab" * 32


def test_every_kind_of_source_gets_a_well_formed_line():
    row = {"depth": 1, "asset": "eval_suites", "data_version": "v1", "dagster_run_id": "run12345678",
           "mlflow_run_id": None, "git_commit": "0123456789abcdef", "config_hash": "c1",
           "code_version": "data-v2+tiny-0a1b2c3d", "sources": [
               {"path": "data/raw/train.jsonl", "sha256": SHA, "rows": 40, "quarantined": 2},
               {"path": "data/gsm8k/test.jsonl", "sha256": SHA, "bytes": 10, "records": 1319},
               {"path": "/hub/snapshot/x.parquet", "sha256": SHA, "records": 5, "dataset": "org/set",
                "revision": "abc123"},
               {"published_model": "Qwen/Qwen3-0.6B", "path": "/hub/qwen3", "sha256": SHA}]}
    lines = format_table([row]).splitlines()
    assert all(line.count("|") == 9 for line in lines)  # 8 columns each
    assert lines[2].endswith("| c1 | data-v2+tiny-0a1b2c3d |")  # the step code's version (Dagster's code_version)
    assert "| ↳ data/raw/train.jsonl | abababababababab | rows 40 | quarantined 2 |" in lines[3]
    assert "| ↳ data/gsm8k/test.jsonl | abababababababab | records 1319 |" in lines[4]
    assert "records 5 | revision abc123 |" in lines[5]
    assert "| ↳ Qwen/Qwen3-0.6B | abababababababab |" in lines[6]
