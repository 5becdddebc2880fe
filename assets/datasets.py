"""[datasets] Training and evaluation tables built from the raw problems.

Eval suites are built first; ``training_problems`` is the training split minus everything that
overlaps them (decontamination, reported in ``contamination_report``), and every training table
(corpus, SFT, think, preference) is built from it, never from raw data directly.
"""

from collections import Counter
from dataclasses import replace
from typing import Literal

import dagster as dg
from pydantic import Field

from assets._automation import UPSTREAM_DATA_CHANGED
from assets._pools import ACCELERATOR
from assets._lineage import recorded, rows_version
from assets._tables import publish_tables, read_published
from assets._metadata import column_schema, preview
from assets.raw import raw_problems, raw_training_data
from pipelines.data.datasets import (CONTAMINATION_COLUMNS, MIX_MODES, PREFERENCE_COLUMNS, SFT_COLUMNS,
                                     USER_CONTAMINATION_COLUMNS, build_corpus, build_eval_suites, build_preference,
                                     build_sft, build_think, check_disjoint, decontaminate, decontaminate_rows,
                                     mix_rows, problems_from_rows)
from pipelines.data.suites import ANSWER_TYPES, BUILTIN_SUITES, SuiteSpec, builtin, load_suite
from pipelines.data.on_policy import OnPolicySettings, sample_on_policy
from pipelines.data.perturbations import PERTURBATIONS
from pipelines.data.problems import Problem
from pipelines.data.raw import QUARANTINE_COLUMNS
from pipelines.paths import PROJECT_ROOT, confine
from pipelines.profiles import with_overrides
from resources import CheckpointStore, DuckDBStore, LineageProfile

TRAINING_PROBLEMS = "training_problems"


def _training(context: dg.AssetExecutionContext, duckdb: DuckDBStore) -> tuple[list[Problem], str]:
    """The published training problems and their version (refused if the latest build was rejected)."""
    rows, version = read_published(context, duckdb, training_problems)
    return problems_from_rows(rows), version


def _table_result(rows: list[dict], preview_columns: list[str], **metadata) -> dg.MaterializeResult:
    return dg.MaterializeResult(data_version=dg.DataVersion(rows_version(rows)), metadata={
        "dagster/row_count": len(rows), "dagster/column_schema": column_schema(rows),
        "preview": preview(rows, preview_columns), **metadata})


class ExtraSuite(dg.Config):
    """Any benchmark file (JSONL, JSON, parquet, CSV) as an eval suite, mapped by config alone."""

    name: str
    path: str
    question: str | None = Field(default=None, description="Template over the record's fields, e.g. "
                                 "'{Body} {Question}'; unset: '{<question_field>}'.")
    question_field: str = "question"
    answer_field: str = "answer"
    answer_format: Literal["gsm8k", "number", "field", "boxed", "regex"] = Field(
        default="gsm8k", description="Where the gold answer is in answer_field: gsm8k (a worked solution "
        "ending in '#### N'), field / number (the field is the answer), boxed (its last \\boxed{}), regex "
        "(the first group of answer_regex).")
    answer_regex: str | None = None
    answer_type: Literal[ANSWER_TYPES] = Field(default="number", description="number (units after it "
                                               "stripped), math (LaTeX: math-verify is primary), choice "
                                               "(a letter), text.")
    strip_units: bool = True
    rel_tol: float | None = Field(default=None, ge=0, description="answer_type number only: the exact "
                                  "grader accepts a value within rel_tol * |gold| (0.01: 1%); a gold 0 "
                                  "needs exactly 0. Unset: the exact value.")
    instruction: str | None = Field(default=None, description="Appended to every question, e.g. "
                                    "'Put the final answer in \\boxed{}.'")
    system_prompt: str | None = Field(default=None, description="Asked with this system prompt instead of "
                                      "the checkpoint's own (chat variants); the base variant reads it as a "
                                      "first line. Unset: prompted as every other suite.")
    limit: int | None = Field(default=None, gt=0, description="A seeded sample of this many items; unset: all.")
    seed: int = 0

    def spec(self) -> SuiteSpec:
        return SuiteSpec(self.name, str(confine(self.path, f"extra_suites[{self.name}].path")),
                         question=self.question or f"{{{self.question_field}}}", answer_field=self.answer_field,
                         answer_from="field" if self.answer_format == "number" else self.answer_format,
                         answer_regex=self.answer_regex, answer_type=self.answer_type, strip_units=self.strip_units,
                         rel_tol=self.rel_tol, instruction=self.instruction, system_prompt=self.system_prompt,
                         limit=self.limit, seed=self.seed)


class EvalSuitesConfig(dg.Config):
    eval_suite_size: int | None = Field(default=None, gt=0, description="Size of the generated suites.")
    seed: int | None = None
    max_operand: int | None = Field(default=None, gt=0)
    builtin_suites: list[str] = Field(default_factory=list, description=f"Bundled benchmarks by name: "
                                      f"{', '.join(sorted(BUILTIN_SUITES))} (each whole, or its limit).")
    builtin_limit: int | None = Field(default=None, gt=0, description="A seeded sample of each built-in suite.")
    extra_suites: list[ExtraSuite] = Field(default_factory=list, description="e.g. "
                                           "{name: mine, path: data/mine.jsonl, answer_format: boxed}")
    max_quarantine_rate: float = Field(default=0.05, ge=0, le=1, description="Per suite; above it the "
                                       "blocking check fails and no suite is published.")
    perturbations: list[str] = Field(default_factory=lambda: list(PERTURBATIONS),
                                     description=f"twin kinds for the perturbed suite, rotated over items: "
                                     f"{', '.join(PERTURBATIONS)}")

    def specs(self, seed: int) -> list[SuiteSpec]:
        builtins = [replace(builtin(name, PROJECT_ROOT), limit=self.builtin_limit, seed=seed)
                    for name in self.builtin_suites]
        return builtins + [extra.spec() for extra in self.extra_suites]


SUITES_CHECK = "eval_suites_complete"


@dg.asset(group_name="datasets", deps=[raw_problems], kinds={"python", "duckdb"},
          automation_condition=UPSTREAM_DATA_CHANGED, check_specs=[dg.AssetCheckSpec(
              SUITES_CHECK, asset="eval_suites", blocking=True,
              description="No configured suite ended empty or over its quarantine limit; otherwise no suite "
                          "is published and nothing is evaluated.")])
def eval_suites(context: dg.AssetExecutionContext, config: EvalSuitesConfig, duckdb: DuckDBStore,
                profile: LineageProfile) -> dg.MaterializeResult:
    """Held-out suites: in-distribution, perturbed twins, domain shift, the bundled benchmarks you name
    (gsm8k, math500) and your own files. Bad records go to ``eval_suite_quarantine`` with a reason."""
    data = with_overrides(profile.settings().data, config.model_dump())
    loaded = [load_suite(spec) for spec in config.specs(data.seed)]
    raw_rows, raw_version = read_published(context, duckdb, raw_problems)
    rows = build_eval_suites(problems_from_rows(raw_rows), data.eval_suite_size, data.seed,
                             data.max_operand, {r.spec.name: r.items for r in loaded},
                             perturbations=tuple(config.perturbations),
                             answer_types={r.spec.name: r.spec.answer_type for r in loaded},
                             system_prompts={r.spec.name: r.spec.system_prompt for r in loaded},
                             rel_tols={r.spec.name: r.spec.rel_tol for r in loaded})
    problems = [p for r in loaded if (p := r.problem(config.max_quarantine_rate))]
    quarantined = [q for r in loaded for q in r.quarantined]
    version = rows_version(rows)
    if not problems:
        publish_tables(duckdb, "eval_suites", version, context.run.run_id, {
            "eval_suites": (rows, None), "eval_suite_quarantine": (quarantined, QUARANTINE_COLUMNS)})
    else:
        context.log.error(f"eval_suites rejected, not published: {'; '.join(problems)}")
        duckdb.replace_table("eval_suite_quarantine_rejected", quarantined, columns=QUARANTINE_COLUMNS)
    per_suite = {r.spec.name: {"records": r.records, "kept": len(r.items), "quarantined": len(r.quarantined),
                               "primary_grader": r.spec.primary_grader} for r in loaded}
    verdict = dg.AssetCheckResult(check_name=SUITES_CHECK, passed=not problems, severity=dg.AssetCheckSeverity.ERROR,
                                  description="; ".join(problems) or None,
                                  metadata={"suites": dg.MetadataValue.json(per_suite)})
    sizes = {suite: sum(r["suite"] == suite for r in rows) for suite in sorted({r["suite"] for r in rows})}
    kinds = Counter(r["perturbation"] for r in rows if r["perturbation"])
    table = _table_result(rows, ["suite", "question", "answer"], suite_sizes=dg.MetadataValue.json(sizes),
                          suite_files=dg.MetadataValue.json(per_suite), published=not problems,
                          perturbation_kinds=dg.MetadataValue.json(dict(sorted(kinds.items()))))
    return recorded(dg.MaterializeResult(data_version=table.data_version, metadata=table.metadata,
                                         check_results=[verdict]), config,
                    inputs={"raw_problems": raw_version}, sources=[a for r in loaded for a in r.read.audit()])


DISJOINT_CHECK = "training_problems_disjoint_from_eval"


def disjointness_verdict(training: list[Problem], eval_rows: list[dict], ngram: int) -> dg.AssetCheckResult:
    """The blocking check, on the rows this step built: no shared key, question or word n-gram."""
    verdict = check_disjoint(training, eval_rows, ngram)
    metadata = {"error": verdict.error} if verdict.error else {
        "training_problems": len(training), "eval_items": len(eval_rows), "ngram_overlaps": len(verdict.overlaps),
        "first_overlaps": dg.MetadataValue.json([vars(m) for m in verdict.overlaps[:5]])}
    return dg.AssetCheckResult(check_name=DISJOINT_CHECK, passed=verdict.problem is None,
                               severity=dg.AssetCheckSeverity.ERROR, description=verdict.problem, metadata=metadata)


@dg.asset(group_name="datasets", deps=[raw_problems, eval_suites], kinds={"python", "duckdb"},
          automation_condition=UPSTREAM_DATA_CHANGED, check_specs=[dg.AssetCheckSpec(
              DISJOINT_CHECK, asset=TRAINING_PROBLEMS, blocking=True,
              description="No training problem shares a key, a question or an n-gram with an eval item, "
                          "and some are left; otherwise nothing is published or trained.")])
def training_problems(context: dg.AssetExecutionContext, duckdb: DuckDBStore,
                      profile: LineageProfile) -> dg.MaterializeResult:
    """The training split, decontaminated against every eval item; what was removed, and why, is in
    ``contamination_report``. Published only when the disjointness check passes on these rows."""
    ngram = profile.settings().data.decontamination_ngram
    raw_rows, raw_version = read_published(context, duckdb, raw_problems)
    eval_rows, eval_version = read_published(context, duckdb, eval_suites)
    result = decontaminate(problems_from_rows(raw_rows), eval_rows, ngram)
    rows = [p.as_row() for p in result.clean]
    verdict = disjointness_verdict(result.clean, eval_rows, ngram)
    version = rows_version(rows)
    if verdict.passed:
        publish_tables(duckdb, TRAINING_PROBLEMS, version, context.run.run_id, {
            TRAINING_PROBLEMS: (rows, list(Problem.__dataclass_fields__)),
            "contamination_report": (result.report, CONTAMINATION_COLUMNS)})
    else:
        context.log.error(f"training_problems rejected, not published: {verdict.description}")
    table = _table_result(rows, ["question", "answer"], removed_as_contaminated=len(result.report), ngram=ngram,
                          published=verdict.passed,
                          removed_by_method=dg.MetadataValue.json(dict(Counter(r["method"] for r in result.report))),
                          contamination_report=preview(result.report, ["method", "eval_suite", "question", "evidence"]))
    return recorded(dg.MaterializeResult(data_version=table.data_version, metadata=table.metadata,
                                         check_results=[verdict]),
                    inputs={"raw_problems": raw_version, "eval_suites": eval_version})


@dg.asset(group_name="datasets", deps=[training_problems], kinds={"python", "duckdb"},
          automation_condition=UPSTREAM_DATA_CHANGED)
def raw_corpus(context: dg.AssetExecutionContext, duckdb: DuckDBStore) -> dg.MaterializeResult:
    """Pretraining documents for the base model, from the decontaminated training problems."""
    problems, version = _training(context, duckdb)
    documents = build_corpus(problems)
    duckdb.replace_table("raw_corpus", documents, columns=["problem_id", "text"])
    return recorded(_table_result(documents, ["text"], characters=sum(len(d["text"]) for d in documents)),
                    inputs={TRAINING_PROBLEMS: version})


class MixConfig(dg.Config):
    problems: Literal[MIX_MODES] = Field(default="auto", description="Rows built from the training problems: "
                                         "'auto' includes them unless you brought rows of this kind "
                                         "(raw_training_data); 'include' mixes both; 'exclude' keeps only yours.")


def _user_rows(context: dg.AssetExecutionContext, duckdb: DuckDBStore, profile: LineageProfile,
               kind: str) -> tuple[list[dict], dict, str]:
    """The user's published rows of ``kind``, decontaminated against every eval item (what was removed
    goes to ``training_data_contamination``), the metadata saying so, and the version read."""
    rows, version = read_published(context, duckdb, raw_training_data,
                                   f"SELECT * FROM raw_training_data WHERE kind = '{kind}' ORDER BY source, source_row")
    dataset = context.asset_key.to_user_string()
    clean, report = decontaminate_rows(dataset, rows, read_published(context, duckdb, eval_suites)[0],
                                       profile.settings().data.decontamination_ngram)
    duckdb.replace_rows("training_data_contamination", report, "dataset", dataset, columns=USER_CONTAMINATION_COLUMNS)
    return clean, {"user_rows": len(clean), "user_rows_removed_as_contaminated": len(report)}, version


def _conversation_dataset(context: dg.AssetExecutionContext, duckdb: DuckDBStore, profile: LineageProfile,
                          kind: str, build, problems: str) -> dg.MaterializeResult:
    training, version = _training(context, duckdb)
    user, metadata, user_version = _user_rows(context, duckdb, profile, kind)
    rows = mix_rows(build(training), user, problems, SFT_COLUMNS)
    duckdb.replace_table(context.asset_key.to_user_string(), rows, columns=SFT_COLUMNS)
    return recorded(_table_result(rows, ["source", "prompt", "completion"], **metadata),
                    inputs={TRAINING_PROBLEMS: version, "raw_training_data": user_version})


@dg.asset(group_name="datasets", deps=[training_problems, raw_training_data, eval_suites], kinds={"python", "duckdb"},
          automation_condition=UPSTREAM_DATA_CHANGED)
def sft_dataset(context: dg.AssetExecutionContext, config: MixConfig, duckdb: DuckDBStore,
                profile: LineageProfile) -> dg.MaterializeResult:
    """Instruct SFT rows: question → direct answer, and your conversations (system prompt and earlier
    turns kept as the prompt of the last assistant turn)."""
    return _conversation_dataset(context, duckdb, profile, "sft", build_sft, config.problems)


@dg.asset(group_name="datasets", deps=[training_problems, raw_training_data, eval_suites], kinds={"python", "duckdb"},
          automation_condition=UPSTREAM_DATA_CHANGED)
def think_dataset(context: dg.AssetExecutionContext, config: MixConfig, duckdb: DuckDBStore,
                  profile: LineageProfile) -> dg.MaterializeResult:
    """Reasoning SFT rows: question → <think>worked solution</think> answer, and your reasoning traces."""
    return _conversation_dataset(context, duckdb, profile, "think", build_think, config.problems)


class PreferenceConfig(dg.Config):
    """Synthetic pairs (a corrupted worked solution), on-policy pairs (the think-SFT model's own right
    and wrong samples, graded by the verifier), or both."""

    source: Literal["synthetic", "on_policy", "both"] = "synthetic"
    problems: Literal[MIX_MODES] = Field(default="auto", description="Pairs built from the training problems "
                                         "(synthetic / on-policy): 'auto' only when you brought no pairs.")
    seed: int | None = None
    on_policy_prompts: int = Field(default=64, gt=0, description="Training prompts to sample on.")
    samples_per_prompt: int = Field(default=4, gt=0)
    temperature: float = Field(default=1.0, ge=0)
    max_new_tokens: int = Field(default=64, gt=0)
    backend: str | None = Field(default=None, description="On-policy sampling engine, hf | vllm; unset: the "
                                "profile's eval chat_backend.")


@dg.asset(group_name="datasets", deps=[training_problems, raw_training_data, eval_suites, think_dataset,
                                       "think_sft_checkpoint"],
          kinds={"python", "duckdb"}, **ACCELERATOR, automation_condition=UPSTREAM_DATA_CHANGED)
def preference_dataset(context: dg.AssetExecutionContext, config: PreferenceConfig, duckdb: DuckDBStore,
                       checkpoints: CheckpointStore, profile: LineageProfile) -> dg.MaterializeResult:
    """DPO pairs (prompt, chosen, rejected) + correct on-policy traces in ``on_policy_traces``."""
    seed = config.seed if config.seed is not None else profile.settings().data.seed
    rows, metadata = [], {}
    problems, training_version = _training(context, duckdb)
    user, user_metadata, user_version = _user_rows(context, duckdb, profile, "preference")
    if config.problems == "exclude" or (config.problems == "auto" and user):
        problems = []  # nothing to build pairs from: only the user's pairs
    if config.source in ("synthetic", "both"):
        rows += build_preference(problems, seed)
    traces: list[dict] = []
    if config.source in ("on_policy", "both") and problems:
        settings = OnPolicySettings(config.on_policy_prompts, config.samples_per_prompt, config.temperature,
                                    config.max_new_tokens, profile.settings().eval.batch_size, seed,
                                    config.backend or profile.settings().eval.chat_backend)
        graded = duckdb.query("SELECT * FROM think_dataset WHERE answer IS NOT NULL")  # a gold answer to verify
        sampled = sample_on_policy(checkpoints.current("think_sft_checkpoint"), graded, settings)
        rows += sampled.pairs
        traces = sampled.correct_traces
        metadata = {"on_policy_samples": sampled.samples, "on_policy_correct": sampled.correct,
                    "on_policy_pairs": len(sampled.pairs)}
    rows = mix_rows(rows, user, "include", PREFERENCE_COLUMNS)
    duckdb.replace_table("preference_dataset", rows, columns=PREFERENCE_COLUMNS)
    duckdb.replace_table("on_policy_traces", traces,
                         columns=["problem_id", "prompt", "messages", "completion", "answer"])
    return recorded(_table_result(rows, ["source", "prompt", "chosen", "rejected"], **metadata,
                                  **user_metadata, source=config.source), config,
                    inputs={TRAINING_PROBLEMS: training_version, "raw_training_data": user_version})
