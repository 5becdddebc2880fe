"""Seeded procedural generator of multi-step arithmetic word problems with worked solutions.

The embedded default needs data that is verifiable (exact answers), learnable by a few-M-parameter model
on two CPU cores (small operands, two steps), and perturbable (same problem, other numbers) so the eval
stage can measure robustness. Domain-shift templates use other wording (units, doses, rates) for the
same arithmetic and never appear in training.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from pipelines.data.problems import Problem, split_for, stable_id

NAMES = ("Tom", "Ann", "Sam", "Mia", "Leo", "Zoe", "Max", "Eva", "Ben", "Ivy", "Dan", "Amy")
ITEMS = ("apples", "pens", "cards", "books", "shells", "coins", "stickers", "marbles", "cookies", "stamps")


@dataclass(frozen=True)
class Template:
    """Question wording plus the two operations it encodes (applied left to right)."""

    name: str
    text: str
    ops: tuple[str, str]


TRAIN_TEMPLATES = (
    Template("buy_give", "{name} has {a} {item}. {name} buys {b} more and gives {c} to {friend}. "
             "How many {item} does {name} have now?", ("+", "-")),
    Template("pick_eat", "{name} picks {a} {item} in the morning and {b} in the afternoon. "
             "{name} gives away {c} of them. How many {item} are left?", ("+", "-")),
    Template("box_add", "A box holds {a} {item}. {name} puts in {b} more and then {c} more. "
             "How many {item} are in the box?", ("+", "+")),
    Template("lose_find", "{name} had {a} {item}. {name} lost {b} and then found {c}. "
              "How many {item} does {name} have?", ("-", "+")),
)

DOMAIN_SHIFT_TEMPLATES = (
    Template("dose", "A nurse gives a patient {a} ml of syrup, then {b} ml more. Later {c} ml is "
             "spilled. How many ml did the patient get in total that stayed?", ("+", "-")),
    Template("distance", "A train travels {a} km, then {b} km more, then {c} km more. "
             "How many km does it travel?", ("+", "+")),
    Template("savings", "{name} saves {a} dollars, spends {b} dollars on lunch, then earns {c} dollars. "
             "How many dollars does {name} have?", ("-", "+")),
)

_APPLY = {"+": lambda x, y: x + y, "-": lambda x, y: x - y}


def solve(template: Template, a: int, b: int, c: int) -> tuple[str, int] | None:
    """Worked solution and answer, or None if an intermediate result would go negative."""
    first = _APPLY[template.ops[0]](a, b)
    result = _APPLY[template.ops[1]](first, c)
    if first < 0 or result < 0:
        return None
    return f"{a} {template.ops[0]} {b} = {first}. {first} {template.ops[1]} {c} = {result}.", result


def render(template: Template, operands: tuple[int, int, int], name: str, friend: str, item: str,
           split: str, source: str) -> Problem | None:
    a, b, c = operands
    solved = solve(template, a, b, c)
    if solved is None:
        return None
    solution, answer = solved
    question = template.text.format(name=name, friend=friend, item=item, a=a, b=b, c=c)
    key = f"{template.name}:{a}:{b}:{c}"
    return Problem(problem_id=stable_id(key, question), key=key, split=split, question=question,
                   solution=solution, answer=str(answer), source=source, template=template.name,
                   template_params=json.dumps({"a": a, "b": b, "c": c, "name": name, "friend": friend,
                                        "item": item}))


def _random_problem(rng: random.Random, templates: tuple[Template, ...], max_operand: int,
                    eval_fraction: float, source: str, split: str | None = None) -> Problem | None:
    template = rng.choice(templates)
    operands = (rng.randint(1, max_operand), rng.randint(1, max_operand), rng.randint(1, max_operand))
    name, friend = rng.sample(NAMES, 2)
    key = f"{template.name}:{operands[0]}:{operands[1]}:{operands[2]}"
    return render(template, operands, name, friend, rng.choice(ITEMS),
                  split or split_for(key, eval_fraction), source)


def generate_problems(n_problems: int, seed: int, max_operand: int, eval_fraction: float) -> list[Problem]:
    """``n_problems`` distinct problems (distinct arithmetic), each assigned a split by its key."""
    space = len(TRAIN_TEMPLATES) * max_operand**3
    if n_problems > space // 2:
        raise ValueError(f"n_problems={n_problems} is too many for max_operand={max_operand} "
                         f"(at most {space // 2} distinct problems); raise max_operand")
    rng = random.Random(seed)
    source = f"synthetic:seed={seed}"
    problems: dict[str, Problem] = {}
    while len(problems) < n_problems:
        problem = _random_problem(rng, TRAIN_TEMPLATES, max_operand, eval_fraction, source)
        if problem is not None and problem.key not in problems:
            problems[problem.key] = problem
    return list(problems.values())


def _template(name: str) -> Template:
    return next(t for t in TRAIN_TEMPLATES + DOMAIN_SHIFT_TEMPLATES if t.name == name)


def perturb(problem: Problem, rng: random.Random, max_operand: int, forbidden_keys: set[str]) -> Problem:
    """Same template and wording, new numbers whose problem key is not in ``forbidden_keys``."""
    if problem.template is None or problem.template_params is None:
        raise ValueError(f"problem {problem.problem_id} from {problem.source} has no template to perturb")
    template = _template(problem.template)
    fields = json.loads(problem.template_params)
    for _ in range(10_000):
        operands = (rng.randint(1, max_operand), rng.randint(1, max_operand), rng.randint(1, max_operand))
        candidate = render(template, operands, fields["name"], fields["friend"], fields["item"],
                           problem.split, f"perturbed:{problem.problem_id}")
        if candidate is not None and candidate.key not in forbidden_keys and candidate.key != problem.key:
            return candidate
    raise RuntimeError(f"could not perturb problem {problem.problem_id}: operand space exhausted")


def domain_shift_problems(n: int, seed: int, max_operand: int) -> list[Problem]:
    """Problems in wording never seen in training (their keys use other template names)."""
    rng = random.Random(seed)
    problems: dict[str, Problem] = {}
    space = len(DOMAIN_SHIFT_TEMPLATES) * max_operand**3
    if n > space // 2:
        raise ValueError(f"domain-shift suite of {n} is too large for max_operand={max_operand}")
    while len(problems) < n:
        problem = _random_problem(rng, DOMAIN_SHIFT_TEMPLATES, max_operand, 0.0,
                                  f"domain_shift:seed={seed}", split="test")
        if problem is not None and problem.key not in problems:
            problems[problem.key] = problem
    return list(problems.values())
