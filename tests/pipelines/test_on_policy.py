from pipelines.data.on_policy import pair_graded_samples

ROWS = [{"problem_id": "p1", "prompt": "1 + 1?", "answer": "2"},
        {"problem_id": "p2", "prompt": "2 + 2?", "answer": "4"},
        {"problem_id": "p3", "prompt": "3 + 3?", "answer": "6"}]


def test_pairs_need_a_right_and_a_wrong_sample_of_the_same_prompt():
    samples = [(ROWS[0], "<think>1 + 1 = 2.</think>2"), (ROWS[0], "<think>1 + 1 = 3.</think>3"),
               (ROWS[0], "<think>1 + 1 = 2.</think>2"),
               (ROWS[1], "<think>2 + 2 = 4.</think>4"), (ROWS[1], "<think>2 + 2 = 4.</think>4"),
               (ROWS[2], "no idea"), (ROWS[2], "<think>3 + 3 = 7.</think>7")]
    data = pair_graded_samples(ROWS, samples)
    assert (data.samples, data.correct) == (7, 4)
    assert [p["problem_id"] for p in data.pairs] == ["p1"]  # p2 all right, p3 all wrong: no pair
    pair = data.pairs[0]
    assert pair["chosen"].endswith("2") and pair["rejected"].endswith("3") and pair["rejected_answer"] == "3"
    assert [(t["problem_id"], t["completion"]) for t in data.correct_traces] == [
        ("p1", "<think>1 + 1 = 2.</think>2"), ("p2", "<think>2 + 2 = 4.</think>4")]  # duplicates dropped
