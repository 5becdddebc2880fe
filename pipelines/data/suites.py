"""Real benchmarks as eval suites, mapped by configuration alone (no preprocessing), as lm-eval's task
configs do: the question from a template over the record's fields, the gold answer from a field, a
regex, the ``#### N`` ending of a worked solution or the last ``\\boxed{}`` of a solution field, and an
answer type that says how it is validated here and which grader is primary in the report.

Every record is kept or quarantined with file, row and a reason naming the field; the caller fails a
blocking check when a suite ends empty or too much of it was quarantined.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipelines.data.ingest import CALCULATOR_ANNOTATION, FINAL_ANSWER
from pipelines.data.problems import TEST_SPLIT, Problem, normalize_question, stable_id
from pipelines.data.records import SourceRead, read_source
from pipelines.evaluation.grading import BOXED, normalize_number

ANSWER_SOURCES = ("gsm8k", "field", "boxed", "regex")
ANSWER_TYPES = ("number", "math", "choice", "text")
PRIMARY_GRADER = {"number": "exact", "math": "math_verify", "choice": "exact", "text": "exact"}
_FIELD = re.compile(r"\{([^{}]+)\}")
# "9 (apples)", "$18.00", "12 dollars", "45%": the number, then units or a parenthetical
_NUMBER_WITH_UNITS = re.compile(
    r"^\s*\$?\s*(-?[\d,]*\.?\d+(?:/\d+)?)\s*(?:\$|%|[A-Za-z°][\w .°/-]*|\(.*\))?\s*\.?\s*$")
_CHOICE = re.compile(r"^\s*\(?([A-Ja-j])\)?[.:]?\s*$")


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    path: str
    question: str = "{question}"  # a template over the record's fields, e.g. "{Body} {Question}"
    answer_field: str = "answer"
    answer_from: str = "gsm8k"  # see ANSWER_SOURCES
    answer_regex: str | None = None  # answer_from "regex": its first group is the answer
    answer_type: str = "number"  # see ANSWER_TYPES
    strip_units: bool = True  # number: "9 (apples)" is 9
    rel_tol: float | None = None  # number: `exact` accepts a value within rel_tol * |gold| (gold 0: exactly 0)
    instruction: str | None = None  # appended to every question, e.g. "Put the final answer in \\boxed{}."
    system_prompt: str | None = None  # chat variants are asked with it instead of the checkpoint's own
    limit: int | None = None  # a seeded sample of this many items; None: all
    seed: int = 0
    format: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "system_prompt", self.system_prompt or None)  # "": none, as unset
        if self.answer_from not in ANSWER_SOURCES:
            raise ValueError(f"suite {self.name}: answer_from '{self.answer_from}', expected one of {ANSWER_SOURCES}")
        if self.answer_type not in ANSWER_TYPES:
            raise ValueError(f"suite {self.name}: answer_type '{self.answer_type}', expected one of {ANSWER_TYPES}")
        if self.answer_from == "regex" and not self.answer_regex:
            raise ValueError(f"suite {self.name}: answer_from regex needs answer_regex")
        if self.rel_tol is not None and self.answer_type != "number":
            raise ValueError(f"suite {self.name}: rel_tol is for answer_type number, not '{self.answer_type}'")
        if self.rel_tol is not None and not (math.isfinite(self.rel_tol) and self.rel_tol >= 0):
            raise ValueError(f"suite {self.name}: rel_tol {self.rel_tol}, expected a finite number >= 0")
        if not _FIELD.search(self.question):
            raise ValueError(f"suite {self.name}: question template '{self.question}' names no field")

    @property
    def primary_grader(self) -> str:
        return PRIMARY_GRADER[self.answer_type]


BUILTIN_SUITES = {  # the bundled benchmarks (data/README.md), selected by name
    "gsm8k": SuiteSpec("gsm8k", "data/gsm8k/test.jsonl"),
    "math500": SuiteSpec("math500", "data/math500/test.jsonl", question="{problem}", answer_from="field",
                         answer_type="math"),
}


@dataclass
class SuiteRead:
    spec: SuiteSpec
    read: SourceRead
    items: list[Problem] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)
    records: int = 0

    def problem(self, limit: float) -> str | None:
        """Why this suite must not be evaluated on (empty, too much quarantined); None if fine."""
        if not self.items:
            return f"suite {self.spec.name} is empty ({self.records} records read, {len(self.quarantined)} quarantined)"
        rate = len(self.quarantined) / self.records if self.records else 0.0
        if rate > limit:
            return (f"suite {self.spec.name}: {len(self.quarantined)} of {self.records} records quarantined "
                    f"({rate:.1%}), over the {limit:.1%} limit")
        return None


def builtin(name: str, project_root: Path) -> SuiteSpec:
    if name not in BUILTIN_SUITES:
        raise ValueError(f"unknown built-in suite '{name}', expected one of {sorted(BUILTIN_SUITES)}")
    spec = BUILTIN_SUITES[name]
    return replace(spec, path=str(project_root / spec.path))


def load_suite(spec: SuiteSpec) -> SuiteRead:
    """Every record of ``spec.path`` as an eval item or a quarantine row; duplicates of a kept question
    are quarantined; ``limit`` then samples the kept items with ``seed`` (the first in file order
    when ``limit`` is at least their number)."""
    result = SuiteRead(spec, SourceRead(spec.path))
    seen: dict[str, int] = {}
    for record in read_source(spec.path, spec.format, read=result.read):
        result.records += 1
        parsed = record.problem or _item(record.value, spec)
        if len(parsed) == 2:
            result.quarantined.append({"file": record.file, "line": record.number, "kind": parsed[0],
                                       "reason": f"suite {spec.name}: {parsed[1]}", "raw": record.preview})
            continue
        question, solution, answer = parsed
        key = normalize_question(question)
        if key in seen:
            result.quarantined.append({"file": record.file, "line": record.number, "kind": "duplicate",
                                       "reason": f"suite {spec.name}: duplicate question of row {seen[key]}",
                                       "raw": record.preview})
            continue
        seen[key] = record.number
        result.items.append(Problem(problem_id=stable_id(spec.name, key), key=key, split=TEST_SPLIT,
                                    question=question, solution=solution, answer=answer, source=record.file,
                                    source_line=record.number))
    if spec.limit is not None and spec.limit < len(result.items):
        chosen = sorted(random.Random(spec.seed).sample(range(len(result.items)), spec.limit))
        result.items = [result.items[i] for i in chosen]
    return result


def _item(record: dict, spec: SuiteSpec) -> tuple[str, str, str] | tuple[str, str]:
    """(question, solution, gold answer), or (kind, reason) naming the field."""
    for name in _FIELD.findall(spec.question) + [spec.answer_field]:
        if name not in record or record[name] is None:
            return "missing_field", f"missing field '{name}'"
        if isinstance(record[name], int | float) and not isinstance(record[name], bool):
            record[name] = str(record[name])
        if not isinstance(record[name], str):
            return "wrong_type", f"field '{name}' is {type(record[name]).__name__}, expected string"
        if not record[name].strip():
            return "empty_field", f"field '{name}' is empty"
    question = _FIELD.sub(lambda m: record[m.group(1)].strip(), spec.question)
    if spec.instruction:
        question = f"{question}\n{spec.instruction}"
    text = record[spec.answer_field]
    solution = ""
    if spec.answer_from == "gsm8k":
        match = FINAL_ANSWER.search(text)
        if "####" not in text or match is None:
            return "no_final_answer", f"field '{spec.answer_field}' has no '#### <final answer>'"
        solution = " ".join(CALCULATOR_ANNOTATION.sub("", text[: match.start()]).split())
        answer = match.group(1)
    elif spec.answer_from == "boxed":
        solution, answer = text, last_boxed(text)
        if answer is None:
            return "no_boxed_answer", f"field '{spec.answer_field}' has no \\boxed{{…}}"
    elif spec.answer_from == "regex":
        match = re.search(spec.answer_regex, text)
        if match is None or not match.groups():
            return "no_regex_match", f"field '{spec.answer_field}' does not match answer_regex"
        answer = match.group(1)
    else:
        answer = text
    gold = _validated(answer.strip(), spec)
    if gold is None:
        return f"non_{spec.answer_type}_answer", f"field '{spec.answer_field}': '{answer.strip()[:40]}' is not " \
                                                 f"a {spec.answer_type} answer"
    return question.strip(), solution, gold


def _validated(answer: str, spec: SuiteSpec) -> str | None:
    """The gold answer as the graders compare it, or None when it is not of the suite's type."""
    if not answer:
        return None
    if spec.answer_type == "number":
        cleaned = answer.replace("$", "").rstrip(".").strip()
        if spec.strip_units:
            match = _NUMBER_WITH_UNITS.match(answer)
            cleaned = match.group(1) if match else cleaned
        return cleaned.replace(",", "") if normalize_number(cleaned) is not None else None
    if spec.answer_type == "choice":
        match = _CHOICE.match(answer)
        return match.group(1).upper() if match else None
    return answer  # math (graded by math-verify) and text (exact after normalisation)


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{…}`` (balanced braces), or None."""
    start = text.rfind(BOXED)
    if start < 0:
        return None
    depth, index = 1, start + len(BOXED)
    for position in range(index, len(text)):
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        if depth == 0:
            return text[index:position].strip() or None
    return None
