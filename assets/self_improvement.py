"""[self_improvement] Rounds of the reasoning branch trained on its own verified samples (expert iteration).

Round k samples round k−1's checkpoint (round 0: ``reasoning_checkpoint``) on training prompts, keeps what
the verifier accepts (``reasoning_round_<k>_samples``) and tunes round k−1's weights on it
(``reasoning_round_<k>_checkpoint``). Each round is an asset pair built by a factory rather than a
partition of one asset: a round reads the previous round's checkpoint, and Dagster's partition mappings
offer no "previous static partition" edge, so partitions would leave the order of rounds (and the lineage
edge "round k−1's checkpoint → round k's samples") to convention. As separate assets each round has its own
data version, code version, MLflow run and place in the asset graph; ``python -m pipelines.lineage back
reasoning_round_2_checkpoint`` walks round 2's samples to round 1's checkpoint. The number of rounds is
the profile's (``LLM_LINEAGE_ROUNDS`` overrides it): assets are fixed when the code location loads.
"""

import os
import shutil
from dataclasses import asdict
from pathlib import Path

import dagster as dg
from pydantic import Field

from assets._automation import UPSTREAM_DATA_CHANGED
from assets._lineage import recorded, rows_version
from assets._metadata import column_schema, preview
from assets._pools import ACCELERATOR
from assets._training import (TrainOverrides, build_checkpoint, combined_fingerprint, input_version, settings_params,
                              train_stages)
from assets.checkpoints import reasoning_checkpoint
from assets.datasets import eval_suites, think_dataset
from pipelines.data.self_improvement import (KEPT, PAIR_COLUMNS, SAMPLE_COLUMNS, START_VALIDATION, STOPPED, VALIDATION,
                                             VERIFIER_VERSION, RoundSettings, best_weights, preference_pairs,
                                             round_prompts, round_statistics, sample_round, split_prompts, stop_reason,
                                             training_rows, validation_pass_at_1)
from pipelines.evaluation.versioning import GENERATION_CODE_VERSION
from pipelines.lineage import content_fingerprint
from pipelines.profiles import PROFILES, with_overrides
from pipelines.training.checkpoint_record import EVALUATION, LINEAGE_FILE, read_record, recorded_chat_options
from pipelines.training.job import TrainJob, write_rows
from resources import CheckpointStore, DuckDBStore, LineageProfile, MLflowTracking, TrainingLauncher

SAMPLES_TABLE = "self_improvement_samples"  # every sample of every round, with its status
PAIRS_TABLE = "self_improvement_pairs"  # right vs wrong samples of one prompt
ROUNDS_TABLE = "self_improvement_rounds"  # one row per round: what was sampled, kept, and why it stopped
TRAINED_ROWS_TABLE = "self_improvement_training_rows"  # the sample ids each round checkpoint trained on
ROUND_COLUMNS = ("round", "sampled_checkpoint", "stopped", "stop_reason", "sampled", "kept", "yield", "prompts",
                 "prompts_with_kept", "mean_output_tokens", "mean_thinking_tokens", "pairs", "contaminated_prompts",
                 "verifier", "fingerprint", "data_version")
HAS_ROWS_CHECK = "round_has_training_rows"


def configured_rounds() -> int:
    """Rounds in the code location: ``LLM_LINEAGE_ROUNDS``, else the active profile's."""
    value = os.environ.get("LLM_LINEAGE_ROUNDS")
    if value is None:
        return PROFILES[os.environ.get("LLM_LINEAGE_PROFILE", "tiny")].self_improvement.rounds
    if not value.isdigit():
        raise ValueError(f"LLM_LINEAGE_ROUNDS must be a whole number of rounds (0 turns them off), got {value!r}")
    return int(value)


class RoundSamplesConfig(dg.Config):
    """Sampling and labelling of one round; unset fields take the profile's ``self_improvement`` values."""

    prompts: int | None = Field(default=None, gt=0, description="Training prompts sampled this round.")
    samples_per_prompt: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0)
    max_new_tokens: int | None = Field(default=None, gt=0)
    agreement: float | None = Field(default=None, gt=0, le=1, description="Prompts without a gold answer: the "
                                    "share of votes the majority answer needs to label them (self-consistency).")
    min_improvement: float | None = Field(default=None, description="Stop here when the previous round gained "
                                          "less validation pass@1 than this over the checkpoint it started from.")
    seed: int | None = None
    backend: str | None = Field(default=None, description="hf | vllm; unset: the profile's eval chat_backend.")


class RoundTrainConfig(dg.Config):
    sft: TrainOverrides = TrainOverrides()
    dpo_enabled: bool = Field(default=False, description="Add a DPO stage on this round's right-vs-wrong pairs.")
    dpo: TrainOverrides = TrainOverrides()
    dpo_beta: float | None = None


def _round_settings(profile: LineageProfile, config: RoundSamplesConfig | None = None) -> RoundSettings:
    settings = profile.settings()
    rounds = settings.self_improvement
    base = RoundSettings(prompts=rounds.prompts, samples_per_prompt=rounds.samples_per_prompt,
                         temperature=rounds.temperature, max_new_tokens=rounds.max_new_tokens,
                         batch_size=settings.eval.batch_size, seed=settings.data.seed, agreement=rounds.agreement,
                         backend=settings.eval.chat_backend)
    return with_overrides(base, config.model_dump()) if config is not None else base


def _prompt_split(duckdb: DuckDBStore, profile: LineageProfile) -> tuple[list[dict], list[dict]]:
    """(validation, pool): validation from prompts with a gold answer; the pool adds those without one. Split by
    the profile's values only, never a round's config: every round and its checkpoint see the same split."""
    rows = duckdb.query("SELECT * FROM think_dataset ORDER BY problem_id")
    graded = [r for r in rows if r.get("answer") not in (None, "")]
    settings = profile.settings()
    validation, pool = split_prompts(graded, settings.self_improvement.validation_prompts, settings.data.seed)
    return validation, pool + [r for r in rows if r.get("answer") in (None, "")]


def build_round(index: int, previous: dg.AssetsDefinition) -> list:
    """Round ``index``'s samples asset (with its check) and its checkpoint asset, after ``previous``."""
    previous_name = previous.key.path[-1]
    samples_name, checkpoint_name = f"reasoning_round_{index}_samples", f"reasoning_round_{index}_checkpoint"

    @dg.asset(name=samples_name, group_name="self_improvement", deps=[previous, think_dataset, eval_suites],
              kinds={"pytorch", "duckdb"}, **ACCELERATOR, automation_condition=UPSTREAM_DATA_CHANGED,
              check_specs=[dg.AssetCheckSpec(HAS_ROWS_CHECK, asset=samples_name, description=(
                  "The round kept verified samples to train on, or was stopped by the early-stopping rule. A round "
                  "whose samples all failed the verifier stops too, and this check fails as a warning."))],
              description=f"{previous_name} sampled on this round's training prompts, each sample labelled by the "
                          "verifier (gold answer) or self-consistency, deduplicated and decontaminated; every sample "
                          f"kept or not is in {SAMPLES_TABLE} with its status, right-vs-wrong pairs in {PAIRS_TABLE}.")
    def _samples(context: dg.AssetExecutionContext, config: RoundSamplesConfig, duckdb: DuckDBStore,
                 checkpoints: CheckpointStore, profile: LineageProfile) -> dg.MaterializeResult:
        settings = _round_settings(profile, config)
        margin = config.min_improvement if config.min_improvement is not None \
            else profile.settings().self_improvement.min_improvement
        model_dir = checkpoints.current(previous_name)
        reason = stop_reason(read_record(model_dir), previous_name, margin) if index > 1 else None
        validation, pool = _prompt_split(duckdb, profile)
        eval_rows = duckdb.rows("eval_suites")
        # what determines this round's rows: unchanged, the stored rows are reused instead of sampling again
        fingerprint = content_fingerprint([index, model_dir.name, asdict(settings), margin, reason, VERIFIER_VERSION,
                                           GENERATION_CODE_VERSION, rows_version(validation + pool),
                                           rows_version(eval_rows)])
        stored = duckdb.query(f"SELECT * FROM {ROUNDS_TABLE} WHERE round = ?", [index]) \
            if ROUNDS_TABLE in duckdb.tables() else []
        if stored and stored[0].get("fingerprint") == fingerprint:
            context.log.info(f"{samples_name}: inputs, config and code unchanged (fingerprint {fingerprint}); "
                             "reusing the stored samples")
            return recorded(dg.MaterializeResult(
                data_version=dg.DataVersion(stored[0]["data_version"]),
                check_results=[_kept_check(stored[0]["kept"], stored[0]["sampled"], stored[0]["stop_reason"] or None)],
                metadata={"reused": True, "fingerprint": fingerprint, "kept": stored[0]["kept"],
                          "stopped": bool(stored[0]["stopped"]), "stop_reason": stored[0]["stop_reason"],
                          "sampled_checkpoint": f"{previous_name}@{model_dir.name}", "verifier": VERIFIER_VERSION}),
                config, inputs={previous_name: model_dir.name})
        records, contaminated = [], set()
        if reason is None:
            records, contaminated = sample_round(index, model_dir, round_prompts(pool, index, settings.prompts),
                                                 settings, eval_rows,
                                                 profile.settings().data.decontamination_ngram, samples_name)
            if not any(r["status"] == KEPT for r in records):  # nothing to learn from: stop, and say so (a warning)
                reason = f"no sample of {previous_name} passed the verifier (0 of {len(records)} kept)"
                context.log.warning(f"{samples_name}: {reason}; the rounds stop here")
        else:
            context.log.info(f"{samples_name}: not sampling, {reason}")
        pairs = preference_pairs(records)
        statistics = round_statistics(records)
        summary = {"round": index, "sampled_checkpoint": model_dir.name, "stopped": reason is not None,
                   "stop_reason": reason or "", **{key: statistics[key] for key in ROUND_COLUMNS if key in statistics},
                   "pairs": len(pairs), "contaminated_prompts": len(contaminated), "verifier": VERIFIER_VERSION}
        data_version = rows_version(records + [summary])
        summary |= {"fingerprint": fingerprint, "data_version": data_version}
        duckdb.replace_rows(SAMPLES_TABLE, records, "round", index, columns=SAMPLE_COLUMNS)
        duckdb.replace_rows(PAIRS_TABLE, pairs, "round", index, columns=PAIR_COLUMNS)
        duckdb.replace_rows(ROUNDS_TABLE, [summary], "round", index, columns=ROUND_COLUMNS)
        check = _kept_check(statistics["kept"], statistics["sampled"], reason)
        return recorded(dg.MaterializeResult(data_version=dg.DataVersion(data_version), check_results=[check], metadata={
            "reused": False, "fingerprint": fingerprint, "dagster/row_count": len(records),
            "dagster/column_schema": column_schema(records, SAMPLE_COLUMNS),
            "sampled_checkpoint": f"{previous_name}@{model_dir.name}", "verifier": VERIFIER_VERSION,
            "stopped": reason is not None, "stop_reason": reason or "", "statistics": dg.MetadataValue.json(statistics),
            "pairs": len(pairs), "contaminated_prompts": len(contaminated), "validation_prompts": len(validation),
            "preview": preview([r for r in records if r["status"] == KEPT], ["prompt", "completion", "label"])}),
            config, inputs={previous_name: model_dir.name})

    @dg.asset(name=checkpoint_name, group_name="self_improvement", deps=[previous, _samples],
              kinds={"pytorch", "mlflow"}, **ACCELERATOR, automation_condition=UPSTREAM_DATA_CHANGED,
              description=f"{previous_name} tuned on round {index}'s kept samples (think-SFT, optional DPO on its "
                          "pairs), with sampled pass@1 on the held-out validation prompts before and after.")
    def _checkpoint(context: dg.AssetExecutionContext, config: RoundTrainConfig, duckdb: DuckDBStore,
                    checkpoints: CheckpointStore, mlflow: MLflowTracking, launcher: TrainingLauncher,
                    profile: LineageProfile) -> dg.MaterializeResult:
        start = checkpoints.current(previous_name)
        summary = duckdb.query(f"SELECT * FROM {ROUNDS_TABLE} WHERE round = ?", [index])
        if not summary or summary[0]["sampled_checkpoint"] != start.name:
            raise ValueError(f"{samples_name} holds samples of {previous_name}@"
                             f"{summary[0]['sampled_checkpoint'] if summary else 'nothing'}, not of the current "
                             f"{start.name}: materialize {samples_name} first")
        settings = _round_settings(profile)
        validation, _ = _prompt_split(duckdb, profile)
        decoding = profile.settings().eval

        def measure(model_dir: Path) -> float:  # sampled as eval_reasoning samples, on prompts no round samples
            return validation_pass_at_1(model_dir, validation, decoding.reasoning_samples,
                                        decoding.reasoning_temperature, settings.max_new_tokens, settings.batch_size,
                                        settings.seed, settings.backend)

        if summary[0]["stopped"]:
            return recorded(_carry_best(context, checkpoint_name, previous_name, start, summary[0]["stop_reason"],
                                        checkpoints, mlflow), config)
        kept = duckdb.query(f"SELECT * FROM {SAMPLES_TABLE} WHERE round = ? AND status = ? ORDER BY sample_id",
                            [index, KEPT])
        rows = training_rows(kept)
        work = Path(launcher.work_root) / checkpoint_name
        sft_settings = with_overrides(profile.settings().self_improvement.sft, config.sft.model_dump())
        parent = {previous_name: input_version(checkpoints, previous_name)}
        chat = recorded_chat_options(start)  # trained as the checkpoint it starts from was, and asked that way
        chat = None if chat.is_default else chat
        stages = [TrainJob(recipe="sft", data_file=str(write_rows(rows, work / "think.jsonl")), settings=sft_settings,
                           save_steps=profile.settings().save_steps, metric_prefix="round_sft/", input_versions=parent,
                           chat=chat)]
        params = settings_params(round_sft=sft_settings) | {"round": index, "training_rows": len(rows)}
        if config.dpo_enabled:
            dpo_settings = with_overrides(profile.settings().dpo, config.dpo.model_dump())
            pairs = duckdb.query(f"SELECT * FROM {PAIRS_TABLE} WHERE round = ? ORDER BY problem_id", [index])
            stages.append(TrainJob(recipe="dpo", data_file=str(write_rows(pairs, work / "dpo.jsonl")),
                                   settings=dpo_settings, beta=config.dpo_beta or profile.settings().dpo_beta,
                                   save_steps=profile.settings().save_steps, metric_prefix="round_dpo/",
                                   input_versions=parent, chat=chat))
            params |= settings_params(round_dpo=dpo_settings)
        recorded_start = read_record(start).get(EVALUATION, {}).get(VALIDATION)  # measured when it was trained

        def evaluate(staging: Path) -> dict[str, float]:  # only when it trains: a reused checkpoint has its figures
            figures = {VALIDATION: measure(staging),
                       START_VALIDATION: measure(start) if recorded_start is None else recorded_start}
            return {key: value for key, value in figures.items() if value is not None}
        lineage = {"round": index, "start_checkpoint": {"name": previous_name, "version": start.name},
                   "trained_on": {"table": SAMPLES_TABLE, "round": index, "rows": len(rows),
                                  "rows_fingerprint": content_fingerprint([r["sample_id"] for r in rows])},
                   "validation_prompts": len(validation), "verifier": VERIFIER_VERSION}
        result = train_stages(context, checkpoint_name, start, stages, checkpoints, mlflow, launcher, params, lineage,
                              evaluate=evaluate)
        trained = checkpoints.current(checkpoint_name).name
        duckdb.replace_rows(TRAINED_ROWS_TABLE, [{"round": index, "sample_id": r["sample_id"],
                                                  "problem_id": r["problem_id"], "trained_checkpoint": trained}
                                                 for r in rows], "round", index,
                            columns=["round", "sample_id", "problem_id", "trained_checkpoint"])
        evaluation = read_record(checkpoints.current(checkpoint_name)).get(EVALUATION, {})
        return recorded(dg.MaterializeResult(data_version=result.data_version, metadata={
            **result.metadata, "training_rows": len(rows),
            **{f"evaluation/{key}": value for key, value in evaluation.items()}}), config)

    return [_samples, _checkpoint]


def _kept_check(kept: int, sampled: int, reason: str | None) -> dg.AssetCheckResult:
    """Passes when the round has verified samples to train on or was stopped by the rule; a round whose samples
    all failed the verifier stops too, with this check failing as a warning (it does not block the evaluation)."""
    zero_yield = kept == 0 and sampled > 0
    return dg.AssetCheckResult(check_name=HAS_ROWS_CHECK, passed=not zero_yield,
                               severity=dg.AssetCheckSeverity.WARN,
                               description=reason if zero_yield else None,
                               metadata={"kept": kept, "sampled": sampled, "stopped": reason is not None})


def _carry_best(context: dg.AssetExecutionContext, name: str, previous_name: str, start: Path, reason: str,
                checkpoints: CheckpointStore, mlflow: MLflowTracking) -> dg.MaterializeResult:
    """A stopped round trains nothing; it publishes the best weights so far (by validation pass@1) under its
    name, so whatever reads the last round (its eval, the champion gate) gets the model early stopping chose."""
    source, source_name = start, previous_name
    if (earlier := best_weights(read_record(start))) is not None:  # round k−1 did worse than where it started
        source, source_name = checkpoints.current(earlier["name"]), earlier["name"]
        if source.name != earlier["version"]:
            raise ValueError(f"{previous_name} started from {earlier['name']}@{earlier['version']}, now "
                             f"{source.name}: materialize {previous_name} again first")
    carried_record = read_record(source)
    carried = carried_record.get(STOPPED, {}).get("weights_of") or f"{source_name}@{source.name}"
    fingerprint = combined_fingerprint(["stopped", carried, input_version(checkpoints, previous_name)])

    def copy(staging: Path, run) -> list:
        for item in source.iterdir():
            if item.name != LINEAGE_FILE and not item.name.startswith("."):
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, staging / item.name)
        return []

    lineage = {STOPPED: {"reason": reason, "weights_of": carried},
               **{key: carried_record[key] for key in ("chat_options", "trust_remote_code", EVALUATION)
                  if key in carried_record}}
    context.log.info(f"{name}: stopped early ({reason}); publishing the weights of {carried}")
    result = build_checkpoint(context, name, fingerprint, {"stopped_early": True, "weights_of": carried}, copy,
                              checkpoints, mlflow, lineage)
    return dg.MaterializeResult(data_version=result.data_version, metadata={
        **result.metadata, "stopped_early": True, "stop_reason": reason, "weights_of": carried})


def rounds_with_validation(duckdb: DuckDBStore, checkpoints: CheckpointStore) -> list[dict]:
    """The rounds table, each row with the validation pass@1 its checkpoint recorded before and after training
    (the current rounds only: a profile with fewer rounds leaves older rows behind)."""
    if ROUNDS_TABLE not in duckdb.tables():
        return []
    rows = []
    for row in duckdb.query(f"SELECT * FROM {ROUNDS_TABLE} WHERE round <= ? ORDER BY round", [ROUNDS]):
        name = f"reasoning_round_{row['round']}_checkpoint"
        evaluation = read_record(checkpoints.current(name)).get(EVALUATION, {}) if checkpoints.has_current(name) else {}
        rows.append({**row, "validation_before": evaluation.get(START_VALIDATION),
                     "validation_after": evaluation.get(VALIDATION)})
    return rows


def build_rounds(count: int) -> tuple[list, list[dg.AssetsDefinition]]:
    """Every round's assets, and the reasoning branch's checkpoints by round: ``reasoning_checkpoint`` is round
    0, the last one the final reasoning model (what ``eval_reasoning`` evaluates and the champion gate judges)."""
    definitions, checkpoints = [], [reasoning_checkpoint]
    for index in range(1, count + 1):
        samples, checkpoint = build_round(index, checkpoints[-1])
        definitions += [samples, checkpoint]
        checkpoints.append(checkpoint)
    return definitions, checkpoints


ROUNDS = configured_rounds()
round_assets, checkpoints_by_round = build_rounds(ROUNDS)
final_reasoning_checkpoint = checkpoints_by_round[-1]
