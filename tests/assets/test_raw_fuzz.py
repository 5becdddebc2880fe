"""Fuzzed raw input through real materializations: every line kept or quarantined with a reason, and the
blocking quarantine-rate check stops everything downstream when the source is mostly broken."""

import json
import random

import dagster as dg
import pytest

from assets.datasets import eval_suites, raw_corpus, sft_dataset, training_problems
from assets.raw import QUARANTINE_CHECK, raw_problems, raw_training_data
from pipelines.definitions import default_resources

SEED = 1234
TEN_MB = 10 * 2**20
FUZZ_LINES = 300


def _valid(i: int) -> dict:
    return {"question": f"Mia has {i} shells and finds {i % 7 + 1} more. How many shells?",
            "answer": f"{i} + {i % 7 + 1} = {i + i % 7 + 1}\n#### {i + i % 7 + 1}"}


def _without(record: dict, field: str) -> dict:
    return {key: value for key, value in record.items() if key != field}


def _encode(record) -> bytes:
    return json.dumps(record).encode()


def fuzzed_lines(rng: random.Random, n: int) -> list[tuple[bytes, str]]:
    """(line bytes, expected outcome): 'kept', a quarantine kind, or '?' for random garbage."""
    lines: list[tuple[bytes, str]] = []
    kept: list[bytes] = []
    makers = {
        "kept": None,
        "not_json": lambda i: _encode(_valid(i))[: rng.randint(1, 40)],
        "wrong_type": lambda i: _encode({**_valid(i), rng.choice(["question", "answer"]):
                                         rng.choice([7, 2.5, None, True, ["x"], {"a": 1}])}),
        "missing_field": lambda i: _encode(_without(_valid(i), rng.choice(["question", "answer"]))),
        "empty_field": lambda i: _encode({**_valid(i), rng.choice(["question", "answer"]): rng.choice(["", "  ",
                                                                                                       "\t\n"])}),
        "invalid_utf8": lambda i: _encode(_valid(i))[:20] + bytes([rng.choice([0xff, 0xfe, 0xc3, 0x80])])
        + b'"}',
        "not_object": lambda i: _encode(rng.choice([[1, 2], "text", 42, None])),
        "no_final_answer": lambda i: _encode({**_valid(i), "answer": f"it is {i}"}),
        "non_numeric_answer": lambda i: _encode({**_valid(i), "answer": "so #### many"}),
        "blank": lambda i: rng.choice([b"", b"   ", b"\t"]),
        "duplicate": None,
        "?": lambda i: bytes(rng.choice([b for b in range(256) if b != 0x0A]) for _ in range(rng.randint(1, 80))),
    }
    for i in range(n):
        kind = rng.choice(list(makers))
        if kind == "kept":
            line = _encode(_valid(i))
            kept.append(line)
        elif kind == "duplicate":
            if not kept:
                continue
            line = rng.choice(kept)
        else:
            line = makers[kind](i)
        lines.append((line, kind))
    # one 10 MB line (a syntactically valid record) and a question with a NUL character
    lines.append((_encode({"question": "x" * TEN_MB, "answer": "#### 1"}), "too_long"))
    lines.append((_encode({"question": "Nul \u0000 inside: 2 + 2?", "answer": "2 + 2 = 4\n#### 4"}), "kept"))
    return lines


def _metadata(result, asset_name):
    return {key: value.value for key, value in result.asset_materializations_for_node(asset_name)[-1].metadata.items()}


def _quarantine_check(result):
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == QUARANTINE_CHECK]
    return evaluation


def _run_config(path, max_rate=None, *more_paths):
    paths = [str(p) for p in (path, *more_paths)]
    config = {"ops": {"raw_problems": {"config": {"source": "jsonl", "jsonl_paths": paths}}}}
    if max_rate is not None:
        config["ops"]["raw_problems"]["config"]["max_quarantine_rate"] = max_rate
    return config


@pytest.fixture
def fuzzed_file(tmp_path):
    lines = fuzzed_lines(random.Random(SEED), FUZZ_LINES)
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join(line for line, _ in lines) + b"\n")
    return path, lines


def test_every_fuzzed_line_is_kept_or_quarantined_with_a_reason(fuzzed_file, lineage_home):
    path, lines = fuzzed_file
    resources = default_resources(lineage_home, profile="smoke", tracking_uri="sqlite:///unused.db")
    result = dg.materialize([raw_problems], resources=resources,
                            run_config=_run_config(path, max_rate=1.0))
    assert result.success
    metadata = _metadata(result, "raw_problems")
    assert metadata["lines_read"] == len(lines)
    assert metadata["kept"] + metadata["quarantined"] == len(lines)
    duckdb = resources["duckdb"]
    kept = {r["source_line"] for r in duckdb.rows("raw_problems")}
    quarantined = {r["line"]: r for r in duckdb.rows("raw_quarantine")}
    assert not kept & set(quarantined)  # no line both kept and quarantined
    assert kept | set(quarantined) == set(range(1, len(lines) + 1))  # and none lost
    assert all(q["reason"] and q["kind"] and q["file"] == str(path) for q in quarantined.values())
    for number, (_, expected) in enumerate(lines, start=1):
        if expected == "kept":
            assert number in kept, (number, quarantined.get(number))
        elif expected != "?":
            assert quarantined[number]["kind"] == expected, (number, quarantined[number])
    assert len(quarantined[len(lines) - 1]["raw"]) <= 500  # the 10 MB line is previewed, not stored whole
    check = _quarantine_check(result)
    assert check.passed and check.metadata["quarantine_rate"].value == metadata["quarantined"] / len(lines)


def test_blocking_quarantine_rate_check_stops_downstream_assets(fuzzed_file, lineage_home):
    path, _ = fuzzed_file  # most lines are broken: far over the profile's 5% limit
    resources = default_resources(lineage_home, profile="smoke", tracking_uri="sqlite:///unused.db")
    result = dg.materialize([raw_problems, raw_training_data, eval_suites, training_problems,
                             raw_corpus, sft_dataset],
                            resources=resources, run_config=_run_config(path), raise_on_error=False)
    assert not result.success
    check = _quarantine_check(result)
    assert not check.passed and check.metadata["max_quarantine_rate"].value == 0.05
    assert "over the 5.0% limit" in check.description
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"raw_problems", "raw_training_data"}  # nothing downstream of raw_problems ran
    assert "sft_dataset" not in resources["duckdb"].tables()


def test_quarantine_rate_under_the_limit_lets_downstream_run(tmp_path, lineage_home):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join([_encode(_valid(i)) for i in range(40)] + [b"not json"]) + b"\n")  # 1 of 46
    held_out = tmp_path / "test.jsonl"  # eval suites need held-out problems
    held_out.write_bytes(b"\n".join(_encode(_valid(i)) for i in range(100, 105)) + b"\n")
    resources = default_resources(lineage_home, profile="smoke", tracking_uri="sqlite:///unused.db")
    result = dg.materialize([raw_problems, raw_training_data, eval_suites, training_problems,
                             sft_dataset], resources=resources, run_config=_run_config(path, None, held_out))
    assert result.success and _quarantine_check(result).passed
    duckdb = resources["duckdb"]
    assert duckdb.count("training_problems") + duckdb.count("contamination_report") == 40
    assert duckdb.count("sft_dataset") == duckdb.count("training_problems") > 0
