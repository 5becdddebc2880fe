import itertools
from fractions import Fraction

import pytest

from pipelines.evaluation.grading import normalize_number
from pipelines.evaluation.metrics import maj_at_k, majority_answer, majority_verdict, pass_at_k


def _brute_force_pass_at_k(n: int, c: int, k: int) -> Fraction:
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(samples[i] for i in subset) for subset in subsets), len(subsets))


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_matches_enumeration_of_every_subset(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(float(_brute_force_pass_at_k(n, c, k)), abs=1e-12)


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_majority_votes_over_equivalent_answers_with_the_graders_verdict():
    answers = [normalize_number(a) for a in ("1,000", "999", "1000", "$1000.")] + [None, None, None]
    correct = [True, False, True, True, False, False, False]
    assert maj_at_k(answers, correct, k=4)
    assert not maj_at_k(["7", "8", "8"], [True, False, False], k=3)
    assert maj_at_k(["7", "8", "8"], [True, False, False], k=1)
    # the voted answer is right when the grader says so, even where "equal" is not string equality
    assert majority_verdict(["sqrt(2)/2", "sqrt(2)/2", "0.7"], [True, True, False])
    assert not majority_verdict([None, None], [False, False])
    assert majority_answer([None, None]) is None
    assert majority_answer(["3", "4"]) == "3"  # a tie goes to the answer seen first
