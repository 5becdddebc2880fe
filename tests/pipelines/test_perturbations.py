import random
from collections import Counter

import pytest

from pipelines.data.datasets import IN_DISTRIBUTION, PERTURBED, build_eval_suites
from pipelines.data.perturbations import (DISTRACTOR, DISTRACTOR_SENTENCES, NUMBERS, ORDER, PERTURBATIONS,
                                          question_first, split_question, with_distractor)
from pipelines.data.problems import Problem
from pipelines.data.synthetic import generate_problems

GSM8K_STYLE = Problem("p1", "gsm8k:1", "test", "Natalia sold clips to 48 of her friends in April. She sold half as "
                      "many clips in May. How many clips did Natalia sell altogether in April and May?",
                      "48/2 = 24. 48+24 = 72.", "72", "gsm8k")


def test_question_first_moves_only_the_question_and_keeps_the_answer():
    twin = question_first(GSM8K_STYLE)
    assert twin.question.startswith("How many clips did Natalia sell")
    assert sorted(split_question(twin.question)[0] + [split_question(twin.question)[1]]) == \
        sorted(split_question(GSM8K_STYLE.question)[0] + [split_question(GSM8K_STYLE.question)[1]])
    assert twin.answer == "72" and twin.key == "gsm8k:1|order" and twin.problem_id != GSM8K_STYLE.problem_id


def test_distractor_adds_one_irrelevant_numbered_sentence_before_the_question():
    twin = with_distractor(GSM8K_STYLE, random.Random(0))
    facts, question = split_question(twin.question)
    assert question == split_question(GSM8K_STYLE.question)[1]
    added = [s for s in facts if s not in GSM8K_STYLE.question]
    assert len(added) == 1 and any(ch.isdigit() for ch in added[0])
    assert any(added[0].startswith(t.split("{")[0]) or t.startswith("{name}") for t in DISTRACTOR_SENTENCES)
    assert twin.answer == "72"


def test_a_question_without_separate_facts_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot separate facts"):
        split_question("What is 2 + 2?")


def test_perturbed_suite_rotates_every_kind_and_pairs_with_originals():
    problems = generate_problems(600, seed=0, max_operand=10, eval_fraction=0.2)
    rows = build_eval_suites(problems, suite_size=60, seed=0, max_operand=10)
    originals = {r["problem_id"]: r for r in rows if r["suite"] == IN_DISTRIBUTION}
    twins = [r for r in rows if r["suite"] == PERTURBED]
    assert len(twins) == len(originals) == 60
    assert Counter(r["perturbation"] for r in twins) == {NUMBERS: 20, ORDER: 20, DISTRACTOR: 20}
    for twin in twins:
        original = originals[twin["original_problem_id"]]
        if twin["perturbation"] == NUMBERS:
            assert twin["question"] != original["question"]
        else:  # wording-only perturbations keep the answer
            assert twin["answer"] == original["answer"] and twin["question"] != original["question"]


def test_templateless_items_get_the_kinds_that_apply():
    items = [Problem(f"g{i}", f"gsm8k:{i}", "test", f"Ann has {i} pens. She buys 2 more. How many pens?",
                     "", str(i + 2), "gsm8k") for i in range(6)] + \
            [Problem("t", "gsm8k:train", "train", "Bo has 1 cup. How many cups?", "", "1", "gsm8k")]
    rows = build_eval_suites(items, suite_size=6, seed=0, max_operand=10)
    kinds = Counter(r["perturbation"] for r in rows if r["suite"] == PERTURBED)
    assert sum(kinds.values()) == 6 and set(kinds) == {ORDER, DISTRACTOR}  # no template: never new numbers


def test_unknown_perturbation_kind_is_rejected():
    problems = generate_problems(200, seed=0, max_operand=10, eval_fraction=0.2)
    with pytest.raises(ValueError, match="perturbations"):
        build_eval_suites(problems, suite_size=10, seed=0, max_operand=10, perturbations=("synonyms",))
    assert set(PERTURBATIONS) == {NUMBERS, ORDER, DISTRACTOR}
