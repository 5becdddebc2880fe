"""[datasets] Training and evaluation tables built from the raw problems."""

from typing import Literal

import dagster as dg
from pydantic import Field

from assets._metadata import preview
from assets.raw import raw_problems
from pipelines.data.datasets import (assert_disjoint, build_eval_suites, build_preference, build_sft,
                                     build_think, problems_from_rows, train_problems)
from pipelines.data.datasets import ContaminationError
from pipelines.profiles import with_overrides
from pipelines.data.ingest import ingest_jsonl
from pipelines.data.on_policy import OnPolicySettings, sample_on_policy
from pipelines.data.raw import QUARANTINE_COLUMNS
from pipelines.paths import confine
from resources import CheckpointStore, DuckDBStore, LineageProfile


def _problems(duckdb: DuckDBStore):
    return problems_from_rows(duckdb.rows("raw_problems"))


def _table_result(rows: list[dict], preview_columns: list[str]) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"dagster/row_count": len(rows),
                                          "preview": preview(rows, preview_columns)})


@dg.asset(group_name="datasets", deps=[raw_problems], kinds={"python", "duckdb"})
def sft_dataset(duckdb: DuckDBStore) -> dg.MaterializeResult:
    """Instruct SFT rows: question → direct answer."""
    rows = build_sft(_problems(duckdb))
    duckdb.replace_table("sft_dataset", rows)
    return _table_result(rows, ["prompt", "completion"])


@dg.asset(group_name="datasets", deps=[raw_problems], kinds={"python", "duckdb"})
def think_dataset(duckdb: DuckDBStore) -> dg.MaterializeResult:
    """Reasoning SFT rows: question → <think>worked solution</think> answer."""
    rows = build_think(_problems(duckdb))
    duckdb.replace_table("think_dataset", rows)
    return _table_result(rows, ["prompt", "completion"])


class PreferenceConfig(dg.Config):
    """Synthetic pairs (a corrupted worked solution), on-policy pairs (the think-SFT model's own right
    and wrong samples, graded by the verifier), or both."""

    source: Literal["synthetic", "on_policy", "both"] = "synthetic"
    seed: int | None = None
    on_policy_prompts: int = Field(default=64, description="Training prompts to sample on.")
    samples_per_prompt: int = 4
    temperature: float = 1.0
    max_new_tokens: int = 64


@dg.asset(group_name="datasets", deps=[raw_problems, think_dataset, "think_sft_checkpoint"],
          kinds={"python", "duckdb"})
def preference_dataset(config: PreferenceConfig, duckdb: DuckDBStore, checkpoints: CheckpointStore,
                       profile: LineageProfile) -> dg.MaterializeResult:
    """DPO pairs (prompt, chosen, rejected) + correct on-policy traces in ``on_policy_traces``."""
    seed = config.seed if config.seed is not None else profile.settings().data.seed
    rows, metadata = [], {}
    if config.source in ("synthetic", "both"):
        rows += build_preference(_problems(duckdb), seed)
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
    result = _table_result(rows, ["source", "prompt", "chosen", "rejected"])
    return dg.MaterializeResult(metadata={**result.metadata, **metadata, "source": config.source})


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


@dg.asset(group_name="datasets", deps=[raw_problems], kinds={"python", "duckdb"})
def eval_suites(config: EvalSuitesConfig, duckdb: DuckDBStore, profile: LineageProfile) -> dg.MaterializeResult:
    """Held-out suites: in-distribution, perturbed twins, domain shift (+ configured JSONL suites);
    disjoint from training, checked. Bad lines of extra suites go to ``eval_suite_quarantine``."""
    data = with_overrides(profile.settings().data, config.model_dump())
    loaded = {extra.name: ingest_jsonl([confine(extra.path, f"extra_suites[{extra.name}].path")],
                                       question_field=extra.question_field,
                                       answer_field=extra.answer_field, answer_format=extra.answer_format)
              for extra in config.extra_suites}
    rows = build_eval_suites(_problems(duckdb), data.eval_suite_size, data.seed, data.max_operand,
                             {name: result.problems for name, result in loaded.items()})
    duckdb.replace_table("eval_suites", rows)
    duckdb.replace_table("eval_suite_quarantine", [q.as_row() for r in loaded.values() for q in r.quarantined],
                         columns=QUARANTINE_COLUMNS)
    sizes = {suite: sum(r["suite"] == suite for r in rows) for suite in sorted({r["suite"] for r in rows})}
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(rows), "suite_sizes": dg.MetadataValue.json(sizes),
        "preview": preview(rows, ["suite", "question", "answer"]),
    })


@dg.asset_check(asset=eval_suites, blocking=True, description="No eval item appears in the training split.")
def eval_suites_disjoint_from_training(duckdb: DuckDBStore) -> dg.AssetCheckResult:
    eval_rows = duckdb.rows("eval_suites")
    try:
        assert_disjoint(eval_rows, train_problems(_problems(duckdb)))
    except ContaminationError as error:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                   metadata={"error": str(error)})
    return dg.AssetCheckResult(passed=True, metadata={"eval_items_checked": len(eval_rows)})
