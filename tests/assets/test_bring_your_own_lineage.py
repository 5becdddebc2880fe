"""Acceptance of issue #16: a whole lineage grown from an imported base and the user's own data
(conversations, reasoning traces, DPO pairs in the raw folder), for a Qwen3-style and a Llama-3-style
base (their own tokenizers, chat templates and stop tokens), and from a base whose architecture ships
as remote code. Training runs as Pipes subprocesses: slow."""

import json
from pathlib import Path

import dagster as dg
import pytest
from transformers import AutoTokenizer

from assets.checkpoints import base_checkpoint, instruct_checkpoint, reasoning_checkpoint, think_sft_checkpoint
from assets.datasets import eval_suites, preference_dataset, sft_dataset, think_dataset, training_problems
from assets.evals import eval_base, eval_instruct, eval_reasoning, eval_report, eval_scores
from assets.self_improvement import round_assets
from assets.raw import raw_problems, raw_training_data
from pipelines.definitions import default_resources
from pipelines.evaluation.generation import load_for_generation
from tests.fixtures.hf_models import generation_config, save_llama3_instruct, save_qwen3_base, save_remote_code_base
from tests.fixtures.user_data import preference_records, sft_records, think_records, write_jsonl

pytestmark = pytest.mark.slow

DATA = [raw_problems, raw_training_data, eval_suites, training_problems, sft_dataset, think_dataset]
USER_ROWS = 20
CHECKPOINTS = ["base_checkpoint", "instruct_checkpoint", "think_sft_checkpoint", "reasoning_checkpoint",
               "reasoning_round_1_checkpoint"]
FAMILIES = {  # fixture builder, the stop tokens every checkpoint of the lineage must end generation with
    "qwen3": (save_qwen3_base, ["<|endoftext|>", "<|im_end|>"]),
    "llama3": (save_llama3_instruct, ["<|end_of_text|>", "<|eot_id|>"]),
}


def _resources(tmp_path):
    home = tmp_path / "lineage"
    return default_resources(home, profile="smoke", tracking_uri=f"sqlite:///{home}/mlflow.db")


def _import_config(base_dir, trust_remote_code=False) -> dict:
    return {"base_checkpoint": {"config": {"base_model": str(base_dir), "trust_remote_code": trust_remote_code}}}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_whole_lineage_grows_from_an_imported_base(family, tmp_path):
    build, stop_tokens = FAMILIES[family]
    base_dir = build(tmp_path / family)
    resources = _resources(tmp_path)
    raw = Path(resources["raw_data"].path)  # the user's own data, as TRL reads it, dropped into the raw folder
    write_jsonl(raw / "chat.jsonl", sft_records(USER_ROWS))
    write_jsonl(raw / "traces.jsonl", think_records(USER_ROWS))
    write_jsonl(raw / "pairs.jsonl", preference_records(USER_ROWS))
    ops = _import_config(base_dir) | {
        "preference_dataset": {"config": {"source": "both", "problems": "include", "on_policy_prompts": 4,
                                          "samples_per_prompt": 2, "max_new_tokens": 16}},
        "reasoning_checkpoint": {"config": {"dpo_enabled": True}},
        # the self-improvement round samples your traces (gold answers: the verifier; none: a majority vote)
        "reasoning_round_1_samples": {"config": {"prompts": 4, "samples_per_prompt": 2, "max_new_tokens": 16}},
        **{f"eval_{variant}": {"config": {"max_new_tokens": 16}} for variant in ("base", "instruct", "reasoning")}}
    result = dg.materialize([*DATA, base_checkpoint, instruct_checkpoint, think_sft_checkpoint, preference_dataset,
                             reasoning_checkpoint, *round_assets, eval_base, eval_instruct, eval_reasoning, eval_scores,
                             eval_report],
                            resources=resources, run_config={"ops": ops})
    assert result.success
    store = resources["duckdb"]
    assert store.count("sft_dataset") == store.count("think_dataset") == USER_ROWS  # yours only (auto)
    assert {r["source"] for r in store.rows("preference_dataset")} >= {str((raw / "pairs.jsonl").resolve()),
                                                                      "synthetic"}
    sampled = result.asset_materializations_for_node("preference_dataset")[-1].metadata["on_policy_samples"].value
    assert sampled == 4 * 2  # on your traces with a gold answer (pairs need a right and a wrong sample)
    trained = [json.loads(line) for line in (Path(resources["launcher"].work_root) / "instruct_checkpoint" / "sft.jsonl")
               .read_text().splitlines()]
    assert sum(r["messages"] is not None for r in trained) > 0  # system prompts and earlier turns reached TRL
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    expected = [tokenizer.convert_tokens_to_ids(token) for token in stop_tokens]
    round_samples = resources["duckdb"].query("SELECT count(*) AS n FROM self_improvement_samples WHERE round = 1")
    assert round_samples == [{"n": 4 * 2}]  # every sample stored with its status, kept or not
    for name in CHECKPOINTS:
        published = resources["checkpoints"].current(name)
        assert generation_config(published)["eos_token_id"] == expected, name
        assert json.loads((published / "lineage.json").read_text())["trust_remote_code"] is False
    assert AutoTokenizer.from_pretrained(resources["checkpoints"].current("reasoning_checkpoint")).chat_template \
        == tokenizer.chat_template  # the family's own template all the way down
    variants = {r["variant"] for r in resources["duckdb"].query("SELECT DISTINCT variant FROM eval_generations")}
    assert variants == {"base", "instruct", "reasoning"}
    scored = {r["variant"] for r in resources["duckdb"].query("SELECT DISTINCT variant FROM eval_scores")}
    assert scored == variants


def test_a_remote_code_base_trains_and_evaluates_with_its_recorded_opt_in(tmp_path):
    """trust_remote_code reached the import only: the next stage's trainer refused the model's code."""
    resources = _resources(tmp_path)
    base_dir = save_remote_code_base(tmp_path / "remote")
    result = dg.materialize([*DATA, base_checkpoint, think_sft_checkpoint], resources=resources,
                            run_config={"ops": _import_config(base_dir, trust_remote_code=True)})
    assert result.success
    published = resources["checkpoints"].current("think_sft_checkpoint")
    record = json.loads((published / "lineage.json").read_text())
    assert record["trust_remote_code"] is True
    assert (published / "modeling_tiny_remote.py").is_file()  # the code travels with the weights
    model, _ = load_for_generation(published)
    assert type(model).__name__ == "TinyRemoteForCausalLM"
