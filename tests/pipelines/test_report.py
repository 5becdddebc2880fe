from pipelines.evaluation.report import comparison_markdown
from pipelines.evaluation.run import summarize


def _sample(variant, suite, correct, tokens):
    return {"variant": variant, "suite": suite, "correct": correct, "output_tokens": tokens}


def test_summary_and_table_per_variant_and_suite():
    samples = [_sample("base", "in_distribution", True, 10), _sample("base", "in_distribution", False, 30),
               _sample("reasoning", "in_distribution", True, 40), _sample("reasoning", "perturbed", False, 20)]
    summary = summarize(samples)
    by_key = {(r["variant"], r["suite"]): r for r in summary}
    assert by_key[("base", "in_distribution")] == {"variant": "base", "suite": "in_distribution", "n": 2,
                                                   "accuracy": 0.5, "mean_output_tokens": 20.0}
    table = comparison_markdown(summary)
    lines = table.splitlines()
    assert lines[0] == "| variant | in_distribution acc | in_distribution tokens | perturbed acc | perturbed tokens |"
    assert lines[2] == "| base | 0.500 | 20.0 | – | – |"  # a missing cell is shown, not hidden
    assert lines[3] == "| reasoning | 1.000 | 40.0 | 0.000 | 20.0 |"
