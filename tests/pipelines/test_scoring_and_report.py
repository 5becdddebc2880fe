import json

import pytest

from pipelines.evaluation.reporting import SECTIONS, build_report
from pipelines.evaluation.scoring import grade_generations, perturbation_drops, score


def _row(variant, suite, problem, index, output, gold, method, selected=False):
    return {"sample_id": f"{variant}-{suite}-{problem}-{index}", "variant": variant, "suite": suite,
            "problem_id": problem, "sample_index": index, "output": output, "gold": gold, "selected": selected,
            "decoding": json.dumps({"method": method}), "output_tokens": 10, "thinking_tokens": 6 if "<think>" in output else 0,
            "answer_tokens": 4, "seconds": 0.1}


def _generations():
    rows = []
    for suite in ("in_distribution", "perturbed", "domain_shift"):
        # base: CoT branches; the selected branch (index 1) is right on p1, wrong on p2
        rows += [_row("base", suite, "p1", 0, "#### 3", "4", "cot"), _row("base", suite, "p1", 1, "#### 4", "4", "cot", True),
                 _row("base", suite, "p2", 0, "#### 9", "9", "cot"), _row("base", suite, "p2", 1, "#### 8", "9", "cot", True)]
        # reasoning: 2 samples per item; p1 right once, p2 right twice
        rows += [_row("reasoning", suite, "p1", 0, "<think>x</think>4", "4", "sample"),
                 _row("reasoning", suite, "p1", 1, "<think>x</think>5", "4", "sample"),
                 _row("reasoning", suite, "p2", 0, "<think>x</think>9", "9", "sample"),
                 _row("reasoning", suite, "p2", 1, "<think>x</think>9", "9", "sample")]
    return rows


def test_scores_from_stored_generations():
    generations = _generations()
    graded = grade_generations(generations, workers=1)
    assert {g["grader"] for g in graded} == {"strict", "flexible", "exact", "math_verify"}
    scores = {(s["variant"], s["suite"], s["grader"]): s for s in score(generations, graded)}
    base = scores[("base", "in_distribution", "exact")]
    assert (base["pass_at_1"], base["pass_at_k"], base["k"]) == (0.5, 1.0, 2)  # selected branch vs any branch
    assert base["greedy_pass_at_1"] == 0.5  # branch 0: wrong on p1, right on p2
    reasoning = scores[("reasoning", "in_distribution", "exact")]
    assert reasoning["pass_at_1"] == 0.75 and reasoning["pass_at_k"] == 1.0
    assert json.loads(reasoning["pass_at_k_curve"]) == [0.75, 1.0]
    assert reasoning["maj_at_k"] == 1.0  # p1 tie 4 vs 5 goes to the first sample (4); p2 unanimous
    assert reasoning["mean_thinking_tokens"] == 6
    assert scores[("reasoning", "in_distribution", "strict")]["pass_at_1"] == 0.0  # no '####': strict says no


def test_maj_at_k_votes_over_each_graders_normalized_answers():
    outputs = {"p1": ("The answer is $18.00.", "The answer is $18.00.", "The answer is 17."),  # gold 18
               "p2": ("<think>x</think>\\boxed{5}", "<think>x</think>5.0", "<think>x</think>6")}  # gold 5
    generations = [_row("reasoning", "in_distribution", problem, index, output, {"p1": "18", "p2": "5"}[problem],
                        "sample") for problem, texts in outputs.items() for index, output in enumerate(texts)]
    scores = {s["grader"]: s for s in score(generations, grade_generations(generations, workers=1))}
    for grader in ("exact", "math_verify"):  # "$18.00" = "18" and "5.0" = "5" for both: they vote together
        assert scores[grader]["maj_at_k"] == 1.0, grader
        assert scores[grader]["pass_at_1"] == pytest.approx(2 / 3), grader
    assert scores["flexible"]["maj_at_k"] == 0.5  # lm-eval: "18.00" is not "18"; p2's tie goes to "5"


def test_report_has_every_section_tables_and_plots():
    generations = _generations()
    report = build_report(score(generations, grade_generations(generations, workers=1)))
    for section in SECTIONS:
        assert section in report.markdown
    assert "| reasoning | 0.750 | 0.250 |" in report.markdown  # pass@1 and the gap to base
    # + CoT-vs-greedy for the base, − zero- vs few-shot (one setting only: the section says how to get it)
    assert report.html.count("<table>") == len(SECTIONS)
    assert "evaluated 0-shot only: set `compare_shots`" in report.markdown
    assert "<h2>Grader dependence" in report.html and "| base | 0.500 | 0.500 |" in report.markdown
    assert "`flexible`: lm-eval GSM8K flexible-extract" in report.markdown  # what each grader column is
    assert set(report.plots) == {"accuracy_by_variant_suite.png", "pass_at_k_curves.png", "tokens_vs_accuracy.png"}
    assert all(png.startswith(b"\x89PNG") for png in report.plots.values())


def test_perturbation_drop_is_paired_per_kind_and_reported():
    generations = _generations()
    for row in generations:  # reasoning gets p2's twin wrong on one of two samples
        if (row["variant"], row["suite"], row["problem_id"], row["sample_index"]) == ("reasoning", "perturbed", "p2", 0):
            row["output"] = "<think>x</think>7"
    suites = [{"suite": "perturbed", "problem_id": "p1", "original_problem_id": "p1", "perturbation": "order"},
              {"suite": "perturbed", "problem_id": "p2", "original_problem_id": "p2", "perturbation": "numbers"},
              {"suite": "in_distribution", "problem_id": "p1", "original_problem_id": None, "perturbation": None}]
    graded = grade_generations(generations, workers=1)
    drops = {(d["variant"], d["perturbation"]): d for d in perturbation_drops(generations, graded, suites)}
    assert set(drops) == {(v, k) for v in ("base", "reasoning") for k in ("order", "numbers")}
    assert drops[("reasoning", "numbers")]["original_pass_at_1"] == 1.0
    assert drops[("reasoning", "numbers")]["drop"] == 0.5 and drops[("reasoning", "numbers")]["pairs"] == 1
    assert drops[("reasoning", "order")]["drop"] == 0.0 and drops[("base", "numbers")]["drop"] == 0.0
    report = build_report(score(generations, graded), perturbation_drops(generations, graded, suites))
    assert "| reasoning | numbers | 1 | 1.000 | 0.500 | 0.500 |" in report.markdown


def test_a_math_suite_is_reported_with_math_verify_as_its_primary_grader():
    """LaTeX gold answers: `exact` reads no number from \\frac{1}{2}; the report's main tables must not
    show such a suite at 0 when math-verify grades it right."""
    from pipelines.evaluation.scoring import mark_primary

    rows = [_row(v, suite, "p1", 0, out, gold, "sample") for v in ("base", "reasoning")
            for suite, out, gold in (("in_distribution", "#### 4", "4"),
                                     ("math500", "The answer is $\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}"))]
    graded = grade_generations(rows, workers=1)
    scores = mark_primary(score(rows, graded), {"in_distribution": "number", "math500": "math"})
    primary = {(s["suite"], s["grader"]) for s in scores if s["primary"]}
    assert primary == {("in_distribution", "exact"), ("math500", "math_verify")}
    by_grader = {(s["suite"], s["grader"]): s["pass_at_1"] for s in scores if s["variant"] == "reasoning"}
    assert by_grader[("math500", "exact")] == 0.0 and by_grader[("math500", "math_verify")] == 1.0
    report = build_report(scores).markdown
    assert "math500 = `math_verify`" in report and "in_distribution = `exact`" in report
    assert "| reasoning | 1.000 | 0.000 | 1.000 | 0.000 |" in report  # both suites at 1.0 in the main table


def test_few_shot_prompts_put_training_exemplars_before_the_question(tmp_path):
    """The paper compares zero-shot with few-shot CoT; there was no few-shot prompting."""
    from transformers import AutoTokenizer

    from pipelines.evaluation.decoding import Decoding
    from pipelines.evaluation.prompts import build_prompt, few_shot_exemplars
    from tests.fixtures.hf_models import save_qwen3_base

    train = [{"problem_id": f"p{i}", "question": f"What is {i} + 1?", "solution": f"{i} + 1 = {i + 1}.",
              "answer": str(i + 1)} for i in range(10)]
    shots = few_shot_exemplars(train, 2, seed=0)
    assert shots == few_shot_exemplars(train, 2, seed=0) and len({s["problem_id"] for s in shots}) == 2
    base = build_prompt("base", "What is 7 + 7?", None, exemplars=shots)
    assert base.count("Question:") == 3 and base.endswith("Question: What is 7 + 7?\nAnswer:")
    assert f"#### {shots[0]['answer']}\n\nQuestion:" in base

    tokenizer = AutoTokenizer.from_pretrained(save_qwen3_base(tmp_path / "qwen3"))  # Qwen3's real chat template
    reasoning = build_prompt("reasoning", "What is 7 + 7?", tokenizer, exemplars=shots)
    assert reasoning.count("<|im_start|>user") == 3 and shots[0]["solution"] in reasoning
    assert reasoning.endswith("<|im_start|>user\nWhat is 7 + 7?<|im_end|>\n<|im_start|>assistant\n")
    shown = f"<|im_start|>assistant\n{shots[1]['solution']} The answer is {shots[1]['answer']}.<|im_end|>"
    assert shown in reasoning  # visible: Qwen3's template drops earlier turns' <think> content
    assert build_prompt("instruct", "What is 7 + 7?", tokenizer, exemplars=shots) == reasoning
    zero = Decoding("sample", 8, 4, 0)
    assert "few_shot" not in zero.describe() and '"few_shot": 5' in Decoding("sample", 8, 4, 0, few_shot=5).describe()
    with pytest.raises(ValueError, match="only 10 training problems"):
        few_shot_exemplars(train, 11, seed=0)


def test_zero_and_few_shot_are_scored_apart_and_reported_side_by_side():
    """The paper compares zero-shot with few-shot CoT in one report; one eval asset can now generate both
    (``compare_shots``): each setting is scored on its own, the main tables keep the configured one."""
    from pipelines.evaluation.summary import metric_points, summary_rows

    def shot_row(problem, output, shots, headline):
        row = _row("reasoning", "in_distribution", problem, 0, output, "4", "sample")
        decoding = {"method": "sample", **({"few_shot": shots} if shots else {})}
        return {**row, "sample_id": f"{row['sample_id']}-{shots}", "decoding": json.dumps(decoding),
                "headline": headline}

    # 4-shot (the configured setting): right on both items; 0-shot beside it: right on one
    generations = [shot_row("p1", "#### 4", 4, True), shot_row("p2", "#### 4", 4, True),
                   shot_row("p1", "#### 4", 0, False), shot_row("p2", "#### 5", 0, False)]
    scores = score(generations, grade_generations(generations, workers=1))
    exact = {s["few_shot"]: s for s in scores if s["grader"] == "exact"}
    assert (exact[4]["pass_at_1"], exact[0]["pass_at_1"]) == (1.0, 0.5)
    assert (exact[4]["headline"], exact[0]["headline"]) == (True, False)
    report = build_report(scores).markdown
    assert "| variant | suite | 0-shot | 4-shot |" in report and "| reasoning | in_distribution | 0.500 | 1.000 |" in report
    assert "| reasoning | 1.000 |" in report  # the variant comparison shows the configured 4-shot setting
    assert [v for key, _, v in metric_points(scores) if key == "pass_at_1/reasoning"] == [1.0]  # one headline each
    assert {(r["few_shot"], r["grader"]) for r in summary_rows(scores)} == {(n, g) for n in (0, 4) for g in
                                                                            ("strict", "flexible", "exact", "math_verify")}
