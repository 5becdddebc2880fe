import pytest

from pipelines.evaluation.grading import extract_final_answer, is_correct, normalize_number


@pytest.mark.parametrize("output, expected", [
    ("12 + 5 = 17. 17 - 3 = 14. #### 14", "14"),
    ("<think>3 + 4 = 7.</think>7", "7"),
    ("<think>3 + 4 = 7. 7 + 1 = 8.</think>The answer is 8.", "8"),
    ("#### $1,234.", "1234"),
    ("it is -5", "-5"),
    ("3.50", "3.5"),
    ("no number at all", None),
    ("<think>2 + 2 = 4</think>", None),  # reasoning that never states an answer gets none
    ("#### 12 #### 13", "13"),
])
def test_extract_final_answer(output, expected):
    assert extract_final_answer(output) == expected


def test_is_correct_compares_exact_values():
    assert is_correct("1234", "1,234")
    assert is_correct("3.5", "3.50")
    assert not is_correct("14", "15")
    assert not is_correct(None, "0")
    assert normalize_number("abc") is None
