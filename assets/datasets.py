"""[datasets] Training and evaluation tables built from the raw problems.

Eval suites are built first; ``training_problems`` is the training split minus everything that
overlaps them (decontamination, reported in ``contamination_report``), and every training table
(corpus, SFT, think, preference) is built from it, never from raw data directly.
"""

from collections import Counter
from typing import Literal

import dagster as dg
from pydantic import Field

from assets._automation import UPSTREAM_DATA_CHANGED
from assets._pools import ACCELERATOR
from assets._lineage import recorded, rows_version
from assets._metadata import preview
from assets.raw import raw_problems
from pipelines.data.datasets import (CONTAMINATION_COLUMNS, ContaminationError, assert_disjoint, build_corpus,
                                     build_eval_suites, build_preference, build_sft, build_think, decontaminate,
                                     problems_from_rows)
from pipelines.data.decontamination import find_contamination
from pipelines.data.ingest import ingest_jsonl
from pipelines.data.on_policy import OnPolicySettings, sample_on_policy
from pipelines.data.perturbations import PERTURBATIONS
from pipelines.data.problems import Problem
from pipelines.data.raw import QUARANTINE_COLUMNS
from pipelines.paths import confine
from pipelines.profiles import with_overrides
from resources import CheckpointStore, DuckDBStore, LineageProfile

TRAINING_PROBLEMS = "training_problems"


def _training(duckdb: DuckDBStore) -> list[Problem]:
    return problems_from_rows(duckdb.rows(TRAINING_PROBLEMS))


def _table_result(rows: list[dict], preview_columns: list[str], **metadata) -> dg.MaterializeResult:
    return dg.MaterializeResult(data_version=dg.DataVersion(rows_version(rows)), metadata={
        "dagster/row_count": len(rows), "preview": preview(rows, preview_columns), **metadata})


class ExtraSuite(dg.Config):
    """Any JSONL math set as an extra eval suite, with a field mapping."""

    name: str
    path: str
    question_field: str = "question"
    answer_field: str = "answer"
    answer_format: str = Field(default="gsm8k", description="gsm8k: a worked solution ending in '#### N'; "
                               "number: the field holds the final answer")


class EvalSuitesConfig(dg.Config):
    eval_suite_size: int | None = None
    seed: int | None = None
    max_operand: int | None = None
    extra_suites: list[ExtraSuite] = Field(default_factory=list, description="e.g. GSM8K test: "
                                           "{name: gsm8k, path: ../shared/datasets/gsm8k/test.jsonl}")
    perturbations: list[str] = Field(default_factory=lambda: list(PERTURBATIONS),
                                     description=f"twin kinds for the perturbed suite, rotated over items: "
                                     f"{', '.join(PERTURBATIONS)}")


@dg.asset(group_name="datasets", deps=[raw_problems], kinds={"python", "duckdb"},
          automation_condition=UPSTREAM_DATA_CHANGED)
def eval_suites(context: dg.AssetExecutionContext, config: EvalSuitesConfig, duckdb: DuckDBStore,
                profile: LineageProfile) -> dg.MaterializeResult:
    """Held-out suites: in-distribution, perturbed twins, domain shift (+ configured JSONL suites).
    Bad lines of extra suites go to ``eval_suite_quarantine``."""
    data = with_overrides(profile.settings().data, config.model_dump())
    loaded = {extra.name: ingest_jsonl([confine(extra.path, f"extra_suites[{extra.name}].path")],
                                       question_field=extra.question_field,
                                       answer_field=extra.answer_field, answer_format=extra.answer_format)
              for extra in config.extra_suites}
    rows = build_eval_suites(problems_from_rows(duckdb.rows("raw_problems")), data.eval_suite_size, data.seed,
                             data.max_operand, {name: result.problems for name, result in loaded.items()},
                             perturbations=tuple(config.perturbations))
    duckdb.replace_table("eval_suites", rows)
    duckdb.replace_table("eval_suite_quarantine", [q.as_row() for r in loaded.values() for q in r.quarantined],
                         columns=QUARANTINE_COLUMNS)
    sizes = {suite: sum(r["suite"] == suite for r in rows) for suite in sorted({r["suite"] for r in rows})}
    kinds = Counter(r["perturbation"] for r in rows if r["perturbation"])
    return recorded(context, duckdb, _table_result(
        rows, ["suite", "question", "answer"], suite_sizes=dg.MetadataValue.json(sizes),
        perturbation_kinds=dg.MetadataValue.json(dict(sorted(kinds.items())))), config)


@dg.asset(group_name="datasets", deps=[raw_problems, eval_suites], kinds={"python", "duckdb"},
          automation_condition=UPSTREAM_DATA_CHANGED)
def training_problems(context: dg.AssetExecutionContext, duckdb: DuckDBStore,
                      profile: LineageProfile) -> dg.MaterializeResult:
    """The training split, decontaminated against every eval item; what was removed, and why, is in
    ``contamination_report``."""
    ngram = profile.settings().data.decontamination_ngram
    result = decontaminate(problems_from_rows(duckdb.rows("raw_problems")), duckdb.rows("eval_suites"), ngram)
    rows = [p.as_row() for p in result.clean]
    duckdb.replace_table(TRAINING_PROBLEMS, rows, columns=list(Problem.__dataclass_fields__))
    duckdb.replace_table("contamination_report", result.report, columns=CONTAMINATION_COLUMNS)
    return recorded(context, duckdb, _table_result(
        rows, ["question", "answer"], removed_as_contaminated=len(result.report), ngram=ngram,
        removed_by_method=dg.MetadataValue.json(dict(Counter(r["method"] for r in result.report))),
        contamination_report=preview(result.report, ["method", "eval_suite", "question", "evidence"])))


@dg.asset_check(asset=training_problems, blocking=True,
                description="No training problem shares a key, a question or an n-gram with an eval item.")
def training_problems_disjoint_from_eval(duckdb: DuckDBStore, profile: LineageProfile) -> dg.AssetCheckResult:
    training, eval_rows = _training(duckdb), duckdb.rows("eval_suites")
    ngram = profile.settings().data.decontamination_ngram
    overlaps = find_contamination([(p.problem_id, p.question) for p in training],
                                  [(f"{r['suite']}/{r['problem_id']}", r["question"]) for r in eval_rows], n=ngram)
    try:
        assert_disjoint(eval_rows, training)
    except ContaminationError as error:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR, metadata={"error": str(error)})
    return dg.AssetCheckResult(passed=not overlaps, severity=dg.AssetCheckSeverity.ERROR, metadata={
        "training_problems": len(training), "eval_items": len(eval_rows), "ngram_overlaps": len(overlaps),
        "first_overlaps": dg.MetadataValue.json([vars(m) for m in overlaps[:5]])})


@dg.asset(group_name="datasets", deps=[training_problems], kinds={"python", "duckdb"},
          automation_condition=UPSTREAM_DATA_CHANGED)
def raw_corpus(context: dg.AssetExecutionContext, duckdb: DuckDBStore) -> dg.MaterializeResult:
    """Pretraining documents for the base model, from the decontaminated training problems."""
    documents = build_corpus(_training(duckdb))
    duckdb.replace_table("raw_corpus", documents, columns=["problem_id", "text"])
    return recorded(context, duckdb, _table_result(documents, ["text"],
                                                   characters=sum(len(d["text"]) for d in documents)))


@dg.asset(group_name="datasets", deps=[training_problems], kinds={"python", "duckdb"},
          automation_condition=UPSTREAM_DATA_CHANGED)
def sft_dataset(context: dg.AssetExecutionContext, duckdb: DuckDBStore) -> dg.MaterializeResult:
    """Instruct SFT rows: question → direct answer."""
    rows = build_sft(_training(duckdb))
    duckdb.replace_table("sft_dataset", rows)
    return recorded(context, duckdb, _table_result(rows, ["prompt", "completion"]))


@dg.asset(group_name="datasets", deps=[training_problems], kinds={"python", "duckdb"},
          automation_condition=UPSTREAM_DATA_CHANGED)
def think_dataset(context: dg.AssetExecutionContext, duckdb: DuckDBStore) -> dg.MaterializeResult:
    """Reasoning SFT rows: question → <think>worked solution</think> answer."""
    rows = build_think(_training(duckdb))
    duckdb.replace_table("think_dataset", rows)
    return recorded(context, duckdb, _table_result(rows, ["prompt", "completion"]))


class PreferenceConfig(dg.Config):
    """Synthetic pairs (a corrupted worked solution), on-policy pairs (the think-SFT model's own right
    and wrong samples, graded by the verifier), or both."""

    source: Literal["synthetic", "on_policy", "both"] = "synthetic"
    seed: int | None = None
    on_policy_prompts: int = Field(default=64, description="Training prompts to sample on.")
    samples_per_prompt: int = 4
    temperature: float = 1.0
    max_new_tokens: int = 64


@dg.asset(group_name="datasets", deps=[training_problems, think_dataset, "think_sft_checkpoint"],
          kinds={"python", "duckdb"}, **ACCELERATOR, automation_condition=UPSTREAM_DATA_CHANGED)
def preference_dataset(context: dg.AssetExecutionContext, config: PreferenceConfig, duckdb: DuckDBStore,
                       checkpoints: CheckpointStore, profile: LineageProfile) -> dg.MaterializeResult:
    """DPO pairs (prompt, chosen, rejected) + correct on-policy traces in ``on_policy_traces``."""
    seed = config.seed if config.seed is not None else profile.settings().data.seed
    rows, metadata = [], {}
    if config.source in ("synthetic", "both"):
        rows += build_preference(_training(duckdb), seed)
    traces: list[dict] = []
    if config.source in ("on_policy", "both"):
        settings = OnPolicySettings(config.on_policy_prompts, config.samples_per_prompt, config.temperature,
                                    config.max_new_tokens, profile.settings().eval.batch_size, seed)
        sampled = sample_on_policy(checkpoints.current("think_sft_checkpoint"), duckdb.rows("think_dataset"), settings)
        rows += sampled.pairs
        traces = sampled.correct_traces
        metadata = {"on_policy_samples": sampled.samples, "on_policy_correct": sampled.correct,
                    "on_policy_pairs": len(sampled.pairs)}
    duckdb.replace_table("preference_dataset", rows,
                         columns=["problem_id", "source", "prompt", "chosen", "rejected", "answer", "rejected_answer"])
    duckdb.replace_table("on_policy_traces", traces, columns=["problem_id", "prompt", "completion", "answer"])
    return recorded(context, duckdb, _table_result(rows, ["source", "prompt", "chosen", "rejected"], **metadata,
                                                   source=config.source), config)
