"""The self-improvement round's labelling: the verifier (answer + steps), self-consistency, dedup, pairs, splits."""

import pytest

from pipelines.data.self_improvement import (CONTAMINATED, DUPLICATE, KEPT, NO_ANSWER, NO_CONSENSUS, WRONG, WRONG_STEP,
                                             label_samples, mark_contaminated, preference_pairs, round_prompts,
                                             round_statistics, split_prompts, steps_consistent, training_rows)


def _row(problem_id: str, answer: str | None) -> dict:
    return {"problem_id": problem_id, "prompt": f"question {problem_id}", "messages": None, "answer": answer}


def _samples(*texts: str) -> list[tuple[str, int, int]]:
    return [(text, len(text.split()), 3) for text in texts]


@pytest.mark.parametrize("text, consistent", [
    ("<think>4 + 3 = 7. 7 + 7 = 14.</think>14", True),
    ("<think>4 + 3 = 8. 8 + 7 = 14.</think>14", False),  # a right answer reached through a wrong step
    ("<think>13 - 1 = 12.</think>12", True),
    ("2 + 3 * 4 = 14", True),  # a chained step, evaluated whole with precedence
    ("2 + 3 + 4 = 10", False),
    ("10 / 4 = 2.5", True),
    ("5 / 0 = 1", False),
    ("<think>Ben has 9 pens.</think>9", True),  # no step stated: nothing to refute
])
def test_the_step_check_recomputes_every_stated_step(text, consistent):
    assert steps_consistent(text) is consistent


def test_gold_answers_verify_and_every_sample_gets_a_status():
    records = label_samples(1, [_row("p1", "14")], [_samples(
        "<think>4 + 3 = 7. 7 + 7 = 14.</think>14", "<think>4 + 3 = 7. 7 + 7 = 14.</think>14",
        "<think>4 + 3 = 8. 8 + 7 = 14.</think>14", "<think>4 + 3 = 7. 7 + 6 = 13.</think>13", "<think>no idea</think>")],
        "ckpt-v1", agreement=0.6)
    assert [r["status"] for r in records] == [KEPT, DUPLICATE, WRONG_STEP, WRONG, NO_ANSWER]
    assert {r["label_source"] for r in records} == {"verifier"} and {r["label"] for r in records} == {"14"}
    assert len({r["sample_id"] for r in records}) == 5 and {r["sampled_checkpoint"] for r in records} == {"ckpt-v1"}
    statistics = round_statistics(records)
    assert statistics["sampled"] == 5 and statistics["kept"] == 1 and statistics["yield"] == pytest.approx(0.2)
    assert statistics["status_wrong_step"] == 1 and statistics["prompts_with_kept"] == 1


def test_prompts_without_gold_are_labelled_by_a_large_enough_majority():
    agreeing = _samples("<think>2 + 2 = 4.</think>4", "<think>1 + 3 = 4.</think>4", "<think>2 + 3 = 5.</think>5")
    split = _samples("<think>2 + 2 = 4.</think>4", "<think>2 + 3 = 5.</think>5", "<think>3 + 3 = 6.</think>6")
    records = label_samples(2, [_row("a", None), _row("b", "")], [agreeing, split], "ckpt", agreement=0.6)
    by_problem = {p: [r for r in records if r["problem_id"] == p] for p in ("a", "b")}
    assert [r["status"] for r in by_problem["a"]] == [KEPT, KEPT, WRONG]  # 2 of 3 votes for "4" >= 0.6
    assert {r["label"] for r in by_problem["a"]} == {"4"} and {r["label_source"] for r in records} == {"majority"}
    assert [r["status"] for r in by_problem["b"]] == [NO_CONSENSUS] * 3  # 1 of 3 votes each: nothing labelled


def test_pairs_training_rows_and_decontamination_use_only_verified_samples():
    records = label_samples(1, [_row("p1", "14"), _row("p2", "5")], [
        _samples("<think>7 + 7 = 14.</think>14", "<think>7 + 6 = 13.</think>13"),
        _samples("<think>2 + 3 = 5.</think>5", "<think>2 + 3 = 5.</think>5")], "ckpt", agreement=0.6)
    pairs = preference_pairs(records)
    assert [(p["problem_id"], p["chosen"], p["rejected"], p["rejected_answer"]) for p in pairs] == [
        ("p1", "<think>7 + 7 = 14.</think>14", "<think>7 + 6 = 13.</think>13", "13")]  # p2 has no wrong sample
    assert [r["sample_id"] for r in training_rows(records)] == [r["sample_id"] for r in records if r["status"] == KEPT]
    cleaned = mark_contaminated(records, {"p2"})
    assert [r["status"] for r in cleaned if r["problem_id"] == "p2"] == [CONTAMINATED, DUPLICATE]
    assert {r["problem_id"] for r in training_rows(cleaned)} == {"p1"}


def test_validation_is_held_out_and_each_round_samples_its_own_block():
    rows = [_row(f"p{i:02d}", str(i)) for i in range(20)]
    validation, pool = split_prompts(rows, 5, seed=0)
    assert len(validation) == 5 and len(pool) == 15
    assert not {r["problem_id"] for r in validation} & {r["problem_id"] for r in pool}
    assert split_prompts(list(reversed(rows)), 5, seed=0) == (validation, pool)  # the input order does not matter
    first, second = round_prompts(pool, 1, 6), round_prompts(pool, 2, 6)
    assert not {r["problem_id"] for r in first} & {r["problem_id"] for r in second}
    assert len(round_prompts(pool, 3, 6)) == 6  # wraps around a used-up pool
    small, rest = split_prompts(rows[:6], 5, seed=0)  # never more than half: the rest is sampled
    assert len(small) == len(rest) == 3


def test_the_stop_rule_reads_the_previous_rounds_record():
    from pipelines.data.self_improvement import STOPPED, stop_reason

    gained = {"evaluation": {"validation_pass_at_1": 0.40, "start_validation_pass_at_1": 0.35}}
    assert stop_reason(gained, "reasoning_round_1_checkpoint", 0.01) is None
    assert "gained +0.050" in stop_reason(gained, "reasoning_round_1_checkpoint", 0.1)
    lost = {"evaluation": {"validation_pass_at_1": 0.30, "start_validation_pass_at_1": 0.35}}
    assert "less than min_improvement 0.0" in stop_reason(lost, "reasoning_round_1_checkpoint", 0.0)
    assert stop_reason({STOPPED: {"reason": "no sample passed"}}, "r1", 0.0) == "r1 stopped: no sample passed"
    assert stop_reason({"evaluation": {}}, "r1", 0.0) is None  # nothing to validate on: the rounds go on


def test_a_stopped_round_carries_the_better_of_the_previous_round_and_its_start():
    from pipelines.data.self_improvement import STOPPED, best_weights

    start = {"name": "reasoning_checkpoint", "version": "v0"}
    gained = {"evaluation": {"validation_pass_at_1": 0.40, "start_validation_pass_at_1": 0.35}, "start_checkpoint": start}
    lost = {"evaluation": {"validation_pass_at_1": 0.30, "start_validation_pass_at_1": 0.35}, "start_checkpoint": start}
    assert best_weights(gained) is None  # the previous round's own weights
    assert best_weights(lost) == start  # it did worse than where it started
    assert best_weights({STOPPED: {"weights_of": "reasoning_checkpoint@v0"}, **lost}) is None  # already the best


def test_the_report_section_follows_the_branch_round_by_round():
    from pipelines.evaluation.reporting import _table
    from pipelines.evaluation.rounds_report import PLOT, rounds_section

    def score(value):
        return {"pass_at_1": value, "pass_at_k": value + 0.2, "maj_at_k": value + 0.1}

    main = {(variant, "in_distribution"): score(value) for variant, value in
            (("reasoning_round_0", 0.26), ("reasoning_round_1", 0.30), ("reasoning", 0.33))}
    rows = [{"round": 2, "sampled": 2048, "kept": 240, "yield": 0.117, "pairs": 180, "mean_output_tokens": 23.1,
             "mean_thinking_tokens": 21.0, "validation_before": 0.30, "validation_after": 0.32, "stopped": False,
             "stop_reason": ""},
            {"round": 1, "sampled": 2048, "kept": 230, "yield": 0.112, "pairs": 170, "mean_output_tokens": 23.3,
             "mean_thinking_tokens": 21.2, "validation_before": 0.28, "validation_after": 0.30, "stopped": False,
             "stop_reason": ""}]
    lines, plots = rounds_section(main, rows, _table)
    text = "\n".join(lines)
    order = [text.index(f"| {label} |") for label in ("round 0", "round 1", "round 2 (final)")]
    assert order == sorted(order)
    assert "| round 2 (final) | 0.330 | 0.530 | 0.430 |" in text
    assert text.index("| 1 | 2048 | 230 |") < text.index("| 2 | 2048 | 240 |")  # rounds in order
    assert plots[PLOT][:8] == b"\x89PNG\r\n\x1a\n"
    assert rounds_section(main, [], _table) == ([], {})  # no rounds ran: no section
