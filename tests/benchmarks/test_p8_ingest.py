"""The ingest benchmark's rows at the quick size: both sides ran, complete tables, well-formed rows (no timing)."""

import math

import pytest

from benchmarks import p8_ingest

@pytest.mark.slow  # child processes for both sides, worker processes for ours (~10 s)
def test_quick_rows_report_time_and_memory_of_both_sides():
    rows = p8_ingest.run(quick=True)
    assert [(row.id, row.unit) for row in rows] == [("P8", "s"), ("P9", "GiB")]
    for row in rows:
        assert row.ours > 0 and row.baseline > 0 and math.isfinite(row.ratio) and isinstance(row.met, bool)
        assert "20,000 rows" in row.notes and "kept 20,000, quarantined 0" in row.notes
        assert "tables complete: True" in row.notes


def test_generated_conversations_are_seeded_and_varied(tmp_path):
    bench = p8_ingest.IngestBench(rows=300)
    size = p8_ingest.write_conversations(tmp_path / "a.jsonl", bench)
    assert size == p8_ingest.write_conversations(tmp_path / "b.jsonl", bench)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    assert len(lines) == 300 and len(set(lines)) == 300
    assert any('"role": "system"' in line for line in lines)
    assert any(line.count('"role": "user"') > 1 for line in lines)
