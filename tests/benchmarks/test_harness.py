"""The benchmark harness produces well-formed rows, JSON and Markdown (no timing is asserted)."""

import json
import math

import pytest

from benchmarks import p2_generation
from benchmarks.harness import BenchReport, BenchRow, markdown_table, text_table, write_results
from benchmarks.run import main, run_benchmarks, selected

ROW_FIELDS = {"id", "measurement", "ours", "baseline", "ratio", "target", "met", "unit", "notes", "seconds"}


@pytest.fixture(scope="module")
def quick_report():
    """The cheap benchmarks at their quick sizes, run once for the module (a few seconds)."""
    return run_benchmarks(["P3", "P6"], quick=True, log=lambda message: None)


def test_quick_rows_are_complete_and_consistent(quick_report):
    assert [row.id for row in quick_report.rows] == ["P3", "P6"]
    for row in quick_report.rows:
        assert row.ours is not None and row.baseline is not None and row.ratio is not None
        assert math.isfinite(row.ratio) and row.ratio > 0
        assert isinstance(row.met, bool) and row.target and row.notes and row.unit
        assert "failed" not in row.notes


def test_decontamination_row_says_both_implementations_agree(quick_report):
    assert "results agree: True" in quick_report.rows[0].notes


def test_results_are_written_as_json_and_markdown(quick_report, tmp_path):
    json_path, md_path = write_results(quick_report, tmp_path, "smoke")
    data = json.loads(json_path.read_text())
    assert data["mode"] == "quick" and data["machine"]["cpus"] >= 1
    assert [set(row) for row in data["rows"]] == [ROW_FIELDS, ROW_FIELDS]
    table_lines = [line for line in md_path.read_text().splitlines() if line.startswith("|")]
    assert len(table_lines) == 2 + len(quick_report.rows)
    assert len({line.count("|") for line in table_lines}) == 1  # every row has every column


def test_not_run_rows_render_without_numbers():
    report = BenchReport(rows=[BenchRow.not_run("P2", "generation", "≥ 2×", "lm_eval not installed")])
    assert "not run: lm_eval not installed" in markdown_table(report)
    assert "—" in text_table(report)


def test_generation_benchmark_is_skipped_gracefully_without_lm_eval(monkeypatch):
    monkeypatch.setattr(p2_generation, "lm_eval_available", lambda: False)
    row = p2_generation.run(quick=True)
    assert row.met is None and row.notes.startswith("not run: lm_eval not installed")


def test_selection_groups_the_demo_rows_and_rejects_unknown_ids():
    assert selected("P5,P7,P3") == ["P4", "P3"]
    assert selected("P9") == ["P8"]  # peak RSS and time come from one ingest run
    assert selected(None) == ["P1", "P2", "P3", "P6", "P8", "P4"]  # the demo pair last
    with pytest.raises(SystemExit):
        selected("P10")


def test_command_line_prints_the_table_and_writes_files(tmp_path, capsys):
    assert main(["--only", "P3", "--quick", "--results-dir", str(tmp_path), "--stem", "cli"]) == 0
    assert "P3" in capsys.readouterr().out
    assert (tmp_path / "cli.json").is_file() and (tmp_path / "cli.md").is_file()
