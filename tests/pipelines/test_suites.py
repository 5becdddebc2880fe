"""Real benchmarks mapped by config alone (issue #17): MATH-500 whole, a question split over two fields,
answers with units, a regex, letters; every record kept or quarantined naming its field."""

import json

import pytest

from pipelines.data.suites import BUILTIN_SUITES, SuiteSpec, builtin, last_boxed, load_suite
from pipelines.definitions import PROJECT_ROOT
from pipelines.training.chat_options import ChatOptions


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_math500_keeps_every_item_with_its_latex_answer():
    """With either GSM8K-style mapping 0 of 20 were kept; extracting \\boxed{} by hand still lost 7 of 20."""
    suite = load_suite(builtin("math500", PROJECT_ROOT))
    assert suite.records == 500 and len(suite.items) >= 495 and suite.problem(0.01) is None
    answers = {item.answer for item in suite.items}
    assert "\\left( 3, \\frac{\\pi}{2} \\right)" in answers  # MATH-500 line 1, LaTeX kept for math-verify
    assert suite.spec.primary_grader == "math_verify"


def test_gsm8k_test_is_built_in_and_whole_by_default():
    suite = load_suite(builtin("gsm8k", PROJECT_ROOT))
    assert len(suite.items) == suite.records == 1319 and suite.items[0].answer == "18"
    assert set(BUILTIN_SUITES) == {"gsm8k", "math500"}


def test_a_question_split_over_two_fields_is_joined_by_a_template(tmp_path):
    rows = [{"Body": f"There are {3 * i} bananas in {i} equal groups.", "Question": "How big is each group?",
             "Answer": i} for i in range(1, 41)]
    suite = load_suite(SuiteSpec("svamp", _write(tmp_path / "svamp.json", rows), question="{Body} {Question}",
                                 answer_field="Answer", answer_from="field"))
    assert len(suite.items) == 40  # one field alone gave 40 copies of "How big is each group?" (duplicates)
    assert suite.items[1].question == "There are 6 bananas in 2 equal groups. How big is each group?"
    assert suite.items[1].answer == "2"


def test_answers_with_units_keep_their_number(tmp_path):
    """A set whose answers carry units (`9 (apples)`) kept 28 of 2,215 rows."""
    units = ["9 (apples)", "$18.00", "12 dollars", "45%", "3/4 cup", "1,200 meters", "-3 degrees", "7."]
    rows = [{"question": f"Question {i}?", "answer": unit} for i, unit in enumerate(units * 5)]
    suite = load_suite(SuiteSpec("units", _write(tmp_path / "units.jsonl", rows), answer_from="field"))
    assert len(suite.items) / suite.records >= 0.95
    assert [item.answer for item in suite.items[:8]] == ["9", "18.00", "12", "45", "3/4", "1200", "-3", "7"]


def test_regex_and_choice_answers(tmp_path):
    rows = [{"question": f"Pick {i}", "target": f"The correct option is ({'ABCD'[i % 4]})."} for i in range(8)]
    suite = load_suite(SuiteSpec("mc", _write(tmp_path / "mc.jsonl", rows), answer_field="target",
                                 answer_from="regex", answer_regex=r"option is \(?([A-J])\)?", answer_type="choice",
                                 instruction="Answer with the letter."))
    assert [item.answer for item in suite.items] == list("ABCDABCD")
    assert suite.items[0].question == "Pick 0\nAnswer with the letter."


def test_bad_records_are_quarantined_naming_the_field_and_limit_samples_with_a_seed(tmp_path):
    rows = [{"problem": f"P{i}", "solution": f"so \\boxed{{{i}}}"} for i in range(30)]
    rows += [{"problem": "no box", "solution": "none"}, {"solution": "\\boxed{1}"}, {"problem": "P0", "solution": "\\boxed{0}"}]
    spec = SuiteSpec("boxed", _write(tmp_path / "b.jsonl", rows), question="{problem}", answer_field="solution",
                     answer_from="boxed", answer_type="math", limit=10, seed=3)
    suite = load_suite(spec)
    assert [(q["line"], q["kind"]) for q in suite.quarantined] == [(31, "no_boxed_answer"), (32, "missing_field"),
                                                                   (33, "duplicate")]
    assert "missing field 'problem'" in suite.quarantined[1]["reason"]
    assert len(suite.items) == 10 and [i.question for i in suite.items] == [i.question for i in load_suite(spec).items]
    assert suite.problem(0.05) == "suite boxed: 3 of 33 records quarantined (9.1%), over the 5.0% limit"


@pytest.mark.parametrize("text, boxed", [("a \\boxed{\\frac{1}{2}} b", "\\frac{1}{2}"),
                                         ("\\boxed{1} then \\boxed{2}", "2"), ("no box", None),
                                         ("\\boxed{unclosed", None)])
def test_last_boxed_reads_balanced_braces(text, boxed):
    assert last_boxed(text) == boxed


def test_a_suite_system_prompt_is_stored_per_item_and_asks_its_items(tmp_path):
    """SuiteSpec.system_prompt was read from config and then used nowhere: no item was asked with it."""
    from transformers import AutoTokenizer

    from pipelines.data.datasets import build_eval_suites
    from pipelines.data.synthetic import generate_problems
    from pipelines.evaluation.decoding import Decoding, generate_samples
    from pipelines.evaluation.prompts import build_prompt
    from pipelines.evaluation.versioning import suites_fingerprint
    from tests.fixtures.hf_models import save_qwen3_base

    rows = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(3)]
    spec = SuiteSpec("terse", _write(tmp_path / "t.jsonl", rows), answer_from="field", system_prompt="Be terse.")
    assert SuiteSpec("plain", spec.path, answer_from="field", system_prompt="").system_prompt is None
    items = build_eval_suites(generate_problems(40, seed=0, max_operand=20, eval_fraction=0.5), 2, 0, 20,
                              {"terse": load_suite(spec).items}, system_prompts={"terse": spec.system_prompt})
    assert {r["system_prompt"] for r in items if r["suite"] == "terse"} == {"Be terse."}
    assert {r["system_prompt"] for r in items if r["suite"] != "terse"} == {None}  # NULL, asked as before
    item = next(r for r in items if r["suite"] == "terse")
    plain = {k: v for k, v in item.items() if k != "system_prompt"}
    assert suites_fingerprint([{**plain, "system_prompt": None}]) == suites_fingerprint([plain])  # stored rows reused
    assert suites_fingerprint([item]) != suites_fingerprint([plain])  # another prompt: not the same generations

    model = save_qwen3_base(tmp_path / "qwen3")  # Qwen3's real chat template
    tokenizer = AutoTokenizer.from_pretrained(model)
    own = ChatOptions(system_prompt="You are the checkpoint.")
    asked = build_prompt("instruct", item["question"], tokenizer, own, system_prompt=item["system_prompt"])
    assert asked.startswith("<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\n")
    assert "You are the checkpoint." not in asked
    assert build_prompt("instruct", "Q?", tokenizer, own).startswith("<|im_start|>system\nYou are the checkpoint.")
    shot = [{"question": "What is 1 + 1?", "solution": "1 + 1 = 2.", "answer": "2"}]
    assert build_prompt("base", "Q?", None, exemplars=shot, system_prompt="Be terse.") == (
        "Be terse.\n\nQuestion: What is 1 + 1?\nAnswer: 1 + 1 = 2. #### 2\n\nQuestion: Q?\nAnswer:")
    assert build_prompt("base", "Q?", None, system_prompt=None) == "Question: Q?\nAnswer:"

    decoding = Decoding("greedy", max_new_tokens=2, batch_size=2, seed=0)
    prompts = {r["suite"]: r["prompt"] for r in generate_samples("reasoning", model, [item, items[0]], decoding, "v",
                                                                 chat=own)}
    assert "<|im_start|>system\nBe terse.<|im_end|>" in prompts["terse"]
    assert prompts[items[0]["suite"]] == build_prompt("reasoning", items[0]["question"], tokenizer, own)


def test_a_number_suites_relative_tolerance_is_stored_per_item_and_validated(tmp_path):
    from pipelines.data.datasets import build_eval_suites
    from pipelines.data.synthetic import generate_problems
    from pipelines.evaluation.versioning import scores_fingerprint, suites_fingerprint

    rows = [{"question": f"Measure {i}?", "answer": f"{i}.5 cm"} for i in range(3)]
    spec = SuiteSpec("lab", _write(tmp_path / "lab.jsonl", rows), answer_from="field", rel_tol=0.01)
    items = build_eval_suites(generate_problems(40, seed=0, max_operand=20, eval_fraction=0.5), 2, 0, 20,
                              {"lab": load_suite(spec).items}, rel_tols={"lab": spec.rel_tol})
    assert {r["rel_tol"] for r in items if r["suite"] == "lab"} == {0.01}
    assert {r["rel_tol"] for r in items if r["suite"] != "lab"} == {None}
    item = next(r for r in items if r["suite"] == "lab")
    exact_only = {**item, "rel_tol": None}
    assert suites_fingerprint([exact_only]) == suites_fingerprint([{k: v for k, v in item.items() if k != "rel_tol"}])
    assert suites_fingerprint([item]) != suites_fingerprint([exact_only])  # other grades: not comparable scores
    assert suites_fingerprint([item], prompts_only=True) == suites_fingerprint([exact_only])  # same generations
    assert scores_fingerprint(["g"], {}) == scores_fingerprint(["g"]) != scores_fingerprint(["g"], {("lab", "p"): 0.01})
    for bad, match in ((dict(answer_type="math"), "rel_tol is for answer_type number"),
                       (dict(rel_tol=-0.1), "expected a finite number >= 0"),
                       (dict(rel_tol=float("nan")), "expected a finite number >= 0")):
        with pytest.raises(ValueError, match=match):
            SuiteSpec("lab", spec.path, answer_from="field", **{"rel_tol": 0.01, **bad})
