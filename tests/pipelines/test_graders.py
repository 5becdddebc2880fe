import pytest

from pipelines.evaluation.graders import exact, flexible, grade_all, math_verify_batch, strict

TRICKY = [  # output, gold, strict, flexible, exact
    ("The answer is $18.", "18", False, True, True),
    ("#### $18.", "18", False, True, True),  # strict needs a number right after '#### '
    ("so **73**", "73", False, True, True),
    ("#### -5", "-5", True, True, True),
    ("it costs 3.50 dollars", "3.5", False, True, True),
    ("#### 1,234", "1234", True, True, True),
    ("I do not know", "4", False, False, False),
    ("<think>2 + 2 = 4.</think>5", "4", False, False, False),  # the stated answer, not the reasoning
    ("<think>2 + 2 = 4.</think>4", "4", False, True, True),
]


@pytest.mark.parametrize("output, gold, strict_ok, flexible_ok, exact_ok", TRICKY)
def test_graders_on_tricky_outputs(output, gold, strict_ok, flexible_ok, exact_ok):
    assert strict(output, gold)[1] is strict_ok
    assert flexible(output, gold)[1] is flexible_ok
    assert exact(output, gold)[1] is exact_ok


def test_math_verify_runs_in_worker_processes_and_agrees_on_plain_answers():
    items = [("The answer is $18$.", "18"), ("\\frac{1}{2}", "0.5"), ("nothing", "3"), ("#### 1,234", "1234")]
    grades = math_verify_batch(items, workers=2)
    assert [correct for _, correct in grades][:3] == [True, True, False]
    assert grade_all(items, workers=2)["math_verify"] == grades
