import random

import pytest

from pipelines.data.datasets import (DOMAIN_SHIFT, IN_DISTRIBUTION, PERTURBED, ContaminationError,
                                     assert_disjoint, build_corpus, build_eval_suites, build_preference,
                                     build_sft, build_think, wrong_solution)
from pipelines.data.problems import Problem
from pipelines.data.synthetic import generate_problems
from pipelines.evaluation.grading import extract_final_answer


@pytest.fixture(scope="module")
def problems():
    return generate_problems(400, seed=0, max_operand=20, eval_fraction=0.2)


def test_training_sets_use_only_the_train_split(problems):
    train_ids = {p.problem_id for p in problems if p.split == "train"}
    for rows in (build_corpus(problems), build_sft(problems), build_think(problems),
                 build_preference(problems, seed=0)):
        assert {r["problem_id"] for r in rows} == train_ids


def test_formats(problems):
    think = build_think(problems)[0]
    assert think["completion"].startswith("<think>") and "</think>" in think["completion"]
    assert extract_final_answer(think["completion"]) == think["answer"]
    sft = build_sft(problems)[0]
    assert sft["completion"] == sft["answer"]
    corpus = build_corpus(problems)[0]["text"]
    assert corpus.startswith("Question: ") and "\nAnswer: " in corpus and "####" in corpus


def test_rejected_solutions_reach_a_wrong_answer(problems):
    for pair in build_preference(problems, seed=0):
        assert extract_final_answer(pair["chosen"]) == pair["answer"]
        assert extract_final_answer(pair["rejected"]) == pair["rejected_answer"] != pair["answer"]
        assert pair["rejected"].count("=") == pair["chosen"].count("=")


def test_wrong_solution_without_equations_changes_only_the_answer():
    problem = Problem("id", "k", "train", "Q?", "She had some and got more.", "10", "test")
    solution, answer = wrong_solution(problem, random.Random(0))
    assert solution == problem.solution and answer != "10"


def test_eval_suites_are_disjoint_paired_and_shifted(problems):
    rows = build_eval_suites(problems, suite_size=30, seed=0, max_operand=20)
    suites = {suite: [r for r in rows if r["suite"] == suite] for suite in (IN_DISTRIBUTION, PERTURBED, DOMAIN_SHIFT)}
    assert all(len(v) == 30 for v in suites.values())
    held_out = {p.problem_id for p in problems if p.split == "test"}
    assert {r["problem_id"] for r in suites[IN_DISTRIBUTION]} <= held_out
    assert {r["original_problem_id"] for r in suites[PERTURBED]} == {r["problem_id"] for r in suites[IN_DISTRIBUTION]}
    train_keys = {p.key for p in problems if p.split == "train"}
    assert not {r["key"] for r in rows} & train_keys


def test_planted_training_item_is_caught(problems):
    train = [p for p in problems if p.split == "train"]
    planted = [{"suite": IN_DISTRIBUTION, "problem_id": train[0].problem_id, "key": "other-key",
                "question": "  " + train[0].question.upper() + " "}]
    with pytest.raises(ContaminationError, match="1 eval items"):
        assert_disjoint(planted, train)
