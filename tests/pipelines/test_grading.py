import pytest

from pipelines.evaluation.grading import extract_final_answer, final_answer_region, is_correct, normalize_number


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
    # the first number of the final-answer region, not the last number of the output
    ("The answer is 12 (she started with 15).", "12"),
    ("#### 18\nCheck: 18 + 16 = 34", "18"),
    ("She has to answer 34 questions.\n34 - 16 = 18\nA: 18", "18"),
    ("Answer: 3 + 4 = 7, so seven.", "7"),  # operands are not the answer
    ("So \\boxed{82}. Check: 82 - 2 = 80", "82"),  # the last box
    ("$\\boxed{82}$.", "82"),
    ("\\boxed{\\frac{3}{4}} apples, not 4", "0.75"),
    ("The answer is 3/4.", "0.75"),
    ("The answer is −3.", "-3"),  # Unicode minus
    ("It dropped to −3", "-3"),
    ("34-16=18", "18"),  # a binary minus is not a sign
    ("The answer is: seventeen", None),  # the region states no number: none, not one from before it
    ("İstanbul: the ANSWER is 7 (not 9)", "7"),  # any case; a non-ASCII letter shifts no index
])
def test_extract_final_answer(output, expected):
    assert extract_final_answer(output) == expected


def test_final_answer_region_kinds():
    assert final_answer_region("x \\boxed{\\frac{1}{2}} y") == ("\\frac{1}{2}", "boxed")
    assert final_answer_region("<think>The answer is 5</think>7") == ("7", "none")
    assert final_answer_region("I answered 3. Plan A: 4") == (" 4", "marker")
    assert final_answer_region("Data: 3 4") == ("Data: 3 4", "none")  # "A:" inside a word is no marker


def test_is_correct_compares_exact_values():
    assert is_correct("1234", "1,234")
    assert is_correct("3.5", "3.50")
    assert not is_correct("14", "15")
    assert not is_correct(None, "0")
    assert normalize_number("abc") is None
    assert normalize_number("3/4") == "0.75" and normalize_number("−3") == "-3" and normalize_number("36/2") == "18"
    assert normalize_number("1/0") is None and normalize_number("nan") is None
