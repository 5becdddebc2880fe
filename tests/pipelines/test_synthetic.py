import json

import random

import pytest

from pipelines.data.synthetic import (DOMAIN_SHIFT_TEMPLATES, TRAIN_TEMPLATES, domain_shift_problems,
                                      generate_problems, perturb)


def _recompute(problem, templates):
    template = next(t for t in templates if t.name == problem.template)
    params = json.loads(problem.template_params)
    value = params["a"]
    for op, operand in zip(template.ops, (params["b"], params["c"])):
        value = value + operand if op == "+" else value - operand
    return value


def test_same_seed_same_problems_other_seed_other_problems():
    first = generate_problems(200, seed=3, max_operand=20, eval_fraction=0.2)
    again = generate_problems(200, seed=3, max_operand=20, eval_fraction=0.2)
    other = generate_problems(200, seed=4, max_operand=20, eval_fraction=0.2)
    assert [p.as_row() for p in first] == [p.as_row() for p in again]
    assert {p.key for p in first} != {p.key for p in other}


def test_answers_are_exact_and_solutions_show_the_steps():
    for problem in generate_problems(300, seed=0, max_operand=20, eval_fraction=0.1):
        assert int(problem.answer) == _recompute(problem, TRAIN_TEMPLATES) >= 0
        assert problem.solution.endswith(f"= {problem.answer}.")
        assert problem.solution.count("=") == 2


def test_problems_are_distinct_and_split_by_key():
    problems = generate_problems(1000, seed=1, max_operand=20, eval_fraction=0.2)
    assert len({p.key for p in problems}) == 1000
    test_share = sum(p.split == "test" for p in problems) / len(problems)
    assert 0.1 < test_share < 0.3
    # The split depends only on the key: a bigger generation keeps every earlier problem's split.
    bigger = {p.key: p.split for p in generate_problems(1500, seed=1, max_operand=20, eval_fraction=0.2)}
    assert all(bigger.get(p.key, p.split) == p.split for p in problems)


def test_too_many_problems_for_the_operand_range_is_a_clear_error():
    with pytest.raises(ValueError, match="max_operand"):
        generate_problems(10_000, seed=0, max_operand=5, eval_fraction=0.1)


def test_perturbation_keeps_wording_changes_numbers_and_avoids_forbidden_keys():
    problems = generate_problems(100, seed=2, max_operand=20, eval_fraction=0.5)
    forbidden = {p.key for p in problems}
    rng = random.Random(0)
    for original in problems[:30]:
        twin = perturb(original, rng, 20, forbidden)
        assert twin.template == original.template
        assert twin.key not in forbidden
        assert json.loads(twin.template_params)["name"] == json.loads(original.template_params)["name"]
        assert int(twin.answer) == _recompute(twin, TRAIN_TEMPLATES)


def test_domain_shift_uses_only_unseen_templates():
    shifted = domain_shift_problems(50, seed=0, max_operand=20)
    assert {p.template for p in shifted} <= {t.name for t in DOMAIN_SHIFT_TEMPLATES}
    assert not {p.template for p in shifted} & {t.name for t in TRAIN_TEMPLATES}
    assert all(int(p.answer) == _recompute(p, DOMAIN_SHIFT_TEMPLATES) for p in shifted)
