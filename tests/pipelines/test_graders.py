import re

import pytest

from benchmarks.data import realistic_outputs
from pipelines.evaluation.graders import exact, flexible, grade_all, math_verify_batch, strict

TRICKY = [  # output, gold, strict, flexible, exact
    ("The answer is $18.", "18", False, True, True),
    ("#### $18.", "18", False, True, True),  # strict needs a number right after '#### '
    ("so **73**", "73", False, True, True),
    ("#### -5", "-5", True, True, True),
    ("it costs 3.50 dollars", "3.5", False, False, True),  # lm-eval compares strings: "3.50" is not "3.5"
    ("#### 18.00", "18", False, False, True),
    ("#### 1,234", "1234", True, True, True),
    ("I do not know", "4", False, False, False),
    ("<think>2 + 2 = 4.</think>5", "4", False, False, False),  # the stated answer, not the reasoning
    ("<think>2 + 2 = 4.</think>4", "4", False, True, True),
    # lm-eval reads the last number anywhere; the final-answer region reads what the answer states
    ("The answer is 3/4.", "4", False, True, False),
    ("The answer is 12 (she started with 15).", "12", False, False, True),
    ("The answer is −3.", "-3", False, False, True),  # Unicode minus: lm-eval's regex reads 3
    ("$\\boxed{82}$.", "82", False, False, True),  # lm-eval's last match is "$.", which reads nothing
    ("So \\boxed{82}. Check: 82 - 2 = 80", "82", False, False, True),
    ("\\boxed{\\frac{3}{4}}", "0.75", False, False, True),
    ("The answer is 3 + 4 = 7.", "7", False, True, True),
    ("Final answer: 1,234", "1234", False, True, True),
]


@pytest.mark.parametrize("output, gold, strict_ok, flexible_ok, exact_ok", TRICKY)
def test_graders_on_tricky_outputs(output, gold, strict_ok, flexible_ok, exact_ok):
    assert strict(output, gold)[1] is strict_ok
    assert flexible(output, gold)[1] is flexible_ok
    assert exact(output, gold)[1] is exact_ok


def _lm_eval(output: str, gold: str, pattern: str, group_select: int) -> tuple[str, bool]:
    """lm-evaluation-harness 0.4.13 transcribed: RegexFilter.apply, then exact_match with gsm8k.yaml's
    regexes_to_ignore and ignore_case (lm_eval/filters/extraction.py, lm_eval/api/metrics.py)."""
    match = re.findall(pattern, output)
    if match:
        match = match[group_select]
        if isinstance(match, tuple):
            match = [m for m in match if m]
            match = match[0] if match else "[invalid]"
        match = match.strip()
    else:
        match = "[invalid]"
    prediction, reference = match, gold
    for ignored in [",", "\\$", "(?s).*#### ", "\\.$"]:
        prediction, reference = re.sub(ignored, "", prediction), re.sub(ignored, "", reference)
    return prediction.lower(), prediction.lower() == reference.lower()


def test_strict_and_flexible_are_lm_eval_gsm8k_exactly():
    items = realistic_outputs(1500, seed=3) + [(output, gold) for output, gold, *_ in TRICKY] + [
        ("The total is 18.00 dollars", "18"), ("#### 007", "7"), ("#### 18..", "18"), ("It is $1,000.", "1000")]
    for grader, pattern, group in ((strict, r"#### (\-?[0-9\.\,]+)", 0),
                                   (flexible, r"(-?[$0-9.,]{2,})|(-?[0-9]+)", -1)):
        for output, gold in items:
            read, correct = _lm_eval(output, gold, pattern, group)
            extracted, ok = grader(output, gold)
            assert ok is correct, (grader.__name__, output, gold)
            assert extracted == (read if read not in ("", "[invalid]") else None), (grader.__name__, output)


def test_math_verify_runs_in_worker_processes_and_agrees_on_plain_answers():
    items = [("The answer is $18$.", "18"), ("\\frac{1}{2}", "0.5"), ("nothing", "3"), ("#### 1,234", "1234")]
    grades = math_verify_batch(items, workers=2)
    assert [correct for _, correct in grades][:3] == [True, True, False]
    assert grade_all(items, workers=2)["math_verify"] == grades


def test_math_verify_reads_only_the_final_answer_region():
    items = [("She has to answer 34 questions.\n34 - 16 = 18\nA: 18", "34"),  # "answer 34" is reasoning
             ("<think>The answer is 5.</think>7", "5"),
             ("A: 12 (she started with 15).", "12"),
             ("The answer is 3/4.", "4"),
             ("The answer is −3.", "-3"),
             ("So \\boxed{82}. Check: 82 - 2 = 80", "82"),
             ("The answer is $18.00.", "18")]
    grades = math_verify_batch(items, workers=1)
    assert [correct for _, correct in grades] == [False, False, True, False, True, True, True]
    assert [answer for answer, _ in grades] == ["18", "7", "12", "0.75", "-3", "82", "18"]  # normalized


def test_exact_accepts_a_number_within_a_suites_relative_tolerance():
    """Issue #17: a number suite's rel_tol; every answer had to be the exact value."""
    from pipelines.evaluation.graders import item_tolerances
    from pipelines.evaluation.scoring import grade_generations

    assert exact("The answer is 100.5", "100", rel_tol=0.01) == ("100.5", True)
    assert exact("The answer is 101", "100", rel_tol=0.01)[1]  # the bound itself is within
    assert not exact("The answer is 102", "100", rel_tol=0.01)[1]
    assert not exact("The answer is 100.5", "100")[1] and not exact("The answer is 100.5", "100", None)[1]
    assert exact("#### -99.2", "-100", rel_tol=0.01)[1] and not exact("#### 99.5", "-100", rel_tol=0.01)[1]
    assert not exact("#### 0.001", "0", rel_tol=0.01)[1] and exact("#### 0", "0", rel_tol=0.01)[1]  # gold 0: exact
    assert not exact("no number", "100", rel_tol=0.5)[1]

    rows = [{"sample_id": f"s{i}", "variant": "instruct", "suite": suite, "problem_id": "p", "output": output,
             "gold": "100"} for i, (suite, output) in enumerate([("lab", "#### 100.5"), ("gsm8k", "#### 100.5")])]
    suite_rows = [{"suite": "lab", "problem_id": "p", "rel_tol": 0.01}, {"suite": "gsm8k", "problem_id": "p",
                                                                          "rel_tol": None}]
    assert item_tolerances(suite_rows) == {("lab", "p"): 0.01}
    graded = grade_generations(rows, workers=1, tolerances=item_tolerances(suite_rows))
    verdicts = {(g["suite"], g["grader"]): g["correct"] for g in graded}
    assert verdicts[("lab", "exact")] and not verdicts[("gsm8k", "exact")]
    assert not verdicts[("lab", "strict")] and not verdicts[("lab", "flexible")]  # lm-eval's: strings, as published
    assert [g["grader"] for g in graded] == [g["grader"] for g in grade_generations(rows, workers=1)]
    items = [(r["output"], r["gold"]) for r in rows]
    assert grade_all(items, workers=1) == grade_all([(*items[0], None), items[1]], workers=1)
