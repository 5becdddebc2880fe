"""Chat template options through the Launchpad (issue #16): instruct_checkpoint trained on an imported
Qwen3-style base with a system prompt, enable_thinking=false and a template file; its lineage.json and
version say so, and eval_instruct asks it the same way unless its own config overrides. Training runs as
a Pipes subprocess: slow."""

import json

import dagster as dg
import pytest
from transformers import AutoTokenizer

from assets.checkpoints import base_checkpoint, instruct_checkpoint
from assets.datasets import eval_suites, sft_dataset, training_problems
from assets.evals import eval_instruct
from assets.raw import raw_problems, raw_training_data
from pipelines.definitions import default_resources
from tests.fixtures.hf_models import qwen3_chat_template, save_qwen3_base

pytestmark = pytest.mark.slow

CHAT = {"system_prompt": "You are terse.", "chat_template_kwargs": {"enable_thinking": False}}


def _metadata(result, name: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(name)[-1].metadata.items()}


def test_instruct_trains_and_is_evaluated_with_its_chat_options(tmp_path):
    home = tmp_path / "lineage"
    resources = default_resources(home, profile="smoke", tracking_uri=f"sqlite:///{home}/mlflow.db")
    template = tmp_path / "qwen3_no_tools.jinja"  # the family's template, edited: a new template file
    template.write_text(qwen3_chat_template().replace("# Tools", "# Functions"))
    instance = dg.DagsterInstance.ephemeral()
    ops = {"base_checkpoint": {"config": {"base_model": str(save_qwen3_base(tmp_path / "Qwen3-Base"))}},
           "instruct_checkpoint": {"config": {"sft": {"max_steps": 2},
                                              "chat": {**CHAT, "chat_template": str(template)}}},
           "eval_instruct": {"config": {"max_new_tokens": 2, "samples": 1}}}
    trained = dg.materialize([raw_problems, raw_training_data, eval_suites, training_problems, sft_dataset,
                              base_checkpoint, instruct_checkpoint, eval_instruct], resources=resources,
                             instance=instance, run_config={"ops": ops})
    assert trained.success
    published = resources["checkpoints"].current("instruct_checkpoint")
    record = json.loads((published / "lineage.json").read_text())
    assert record["chat_options"]["system_prompt"] == "You are terse."
    assert record["chat_options"]["template_kwargs"] == {"enable_thinking": False}
    assert record["chat_options"]["chat_template_file"] == str(template.resolve())
    assert record["stages"][0]["chat"] == record["chat_options"]
    assert AutoTokenizer.from_pretrained(published).chat_template == template.read_text()

    prompts = {r["prompt"] for r in resources["duckdb"].query("SELECT prompt FROM eval_generations")}
    assert prompts and all(p.startswith("<|im_start|>system\nYou are terse.<|im_end|>\n") for p in prompts)
    assert all(p.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n") for p in prompts)
    assert _metadata(trained, "eval_instruct")["chat_options"]["template_kwargs"] == {"enable_thinking": False}
    as_trained = _metadata(trained, "eval_instruct")["fingerprint"]

    override = {**ops["eval_instruct"]["config"],
                "chat": {"system_prompt": "", "chat_template_kwargs": {"enable_thinking": True}}}
    overridden = dg.materialize([eval_instruct], resources=resources, instance=instance,
                                run_config={"ops": {"eval_instruct": {"config": override}}})
    metadata = _metadata(overridden, "eval_instruct")
    assert metadata["reused"] is False and metadata["fingerprint"] != as_trained
    assert metadata["chat_options"]["template_kwargs"] == {"enable_thinking": True}
    assert "system_prompt" not in metadata["chat_options"]
    prompts = {r["prompt"] for r in resources["duckdb"].query("SELECT prompt FROM eval_generations")}
    assert all(p.startswith("<|im_start|>user\n") and p.endswith("<|im_start|>assistant\n") for p in prompts)
