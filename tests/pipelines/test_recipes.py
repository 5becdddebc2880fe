"""LoRA, assistant-only loss, GRPO and importing an existing base: real TRL/peft steps on a micro model."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pipelines.data.datasets import build_sft, build_think
from pipelines.data.formats import assistant_messages, user_messages
from pipelines.training.job import GrpoSettings, LoraSettings
from pipelines.training.recipes import RunOptions, grpo, import_base, sft
from pipelines.training.rewards import correctness_reward, format_reward
from tests.pipelines.conftest import micro_settings


def test_lora_merged_publishes_full_weights_and_adapter_only_publishes_an_adapter(micro_base, micro_problems, tmp_path):
    base_dir, _ = micro_base
    rows = build_sft(micro_problems)
    sft(base_dir, rows, micro_settings(2), tmp_path / "merged", options=RunOptions(lora=LoraSettings(merge=True)))
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    assert not torch.equal(merged.model.layers[0].self_attn.q_proj.weight, base.model.layers[0].self_attn.q_proj.weight)
    assert torch.equal(merged.model.layers[0].mlp.up_proj.weight, base.model.layers[0].mlp.up_proj.weight)  # frozen

    sft(base_dir, rows, micro_settings(2), tmp_path / "adapter", options=RunOptions(lora=LoraSettings(merge=False)))
    adapter = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and set(adapter["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    from peft import AutoPeftModelForCausalLM

    assert AutoPeftModelForCausalLM.from_pretrained(tmp_path / "adapter") is not None


def test_non_thinking_rows_put_no_think_block_in_the_loss(micro_tokenizer_dir):
    """The assistant mask (what assistant_only_loss trains) is exactly the answer and end token."""
    tokenizer = AutoTokenizer.from_pretrained(micro_tokenizer_dir)
    rendered = tokenizer.apply_chat_template(user_messages("What is 2 + 40?") + assistant_messages("42"),
                                             return_assistant_tokens_mask=True, return_dict=True)
    trained = [t for t, m in zip(rendered["input_ids"], rendered["assistant_masks"]) if m]
    assert tokenizer.decode(trained) == "42<|im_end|>"
    assert tokenizer.convert_tokens_to_ids("<think>") not in rendered["input_ids"]


def test_assistant_only_loss_sft_trains(micro_base, micro_problems, tmp_path):
    summary = sft(micro_base[0], build_sft(micro_problems), micro_settings(2), tmp_path / "out",
                  options=RunOptions(assistant_only_loss=True))
    assert summary.steps == 2 and all(loss == loss for _, loss in summary.loss_history)


def test_grpo_stage_trains_with_verifiable_rewards(micro_base, micro_problems, tmp_path):
    rows = [{"prompt": r["prompt"], "answer": r["answer"]} for r in build_think(micro_problems)]
    summary = grpo(micro_base[0], rows, micro_settings(2, batch_size=4), GrpoSettings(num_generations=4,
                   max_completion_length=8), tmp_path / "grpo")
    assert summary.recipe == "grpo" and summary.steps == 2
    AutoModelForCausalLM.from_pretrained(tmp_path / "grpo")


def test_rewards_score_correctness_and_format():
    completions = [[{"role": "assistant", "content": "<think>2 + 3 = 5.</think>5"}],
                   [{"role": "assistant", "content": "5"}],
                   [{"role": "assistant", "content": "<think>2 + 3 = 6.</think>6"}]]
    assert correctness_reward(completions, answer=["5", "5", "5"]) == [1.0, 1.0, 0.0]
    assert format_reward(completions) == [0.5, 0.0, 0.5]


def test_existing_base_model_is_imported_from_a_local_directory(micro_base, tmp_path):
    summary = import_base(str(micro_base[0]), tmp_path / "imported")
    assert summary.recipe == "import" and summary.num_parameters > 0
    imported = AutoModelForCausalLM.from_pretrained(tmp_path / "imported")
    original = AutoModelForCausalLM.from_pretrained(micro_base[0])
    assert torch.equal(imported.lm_head.weight, original.lm_head.weight)
    with pytest.raises(OSError):
        import_base(str(tmp_path / "missing"), tmp_path / "nothing")


def test_gpu_profile_is_a_0_6b_qwen3_with_bf16_friendly_settings(micro_tokenizer_dir):
    from transformers import AutoTokenizer

    from pipelines.profiles import PROFILES
    from pipelines.training.model import init_tiny_qwen3

    gpu = PROFILES["gpu"]
    with torch.device("meta"):  # shape only, no memory
        model = init_tiny_qwen3(gpu.model, AutoTokenizer.from_pretrained(micro_tokenizer_dir), seed=0)
    non_embedding = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n)
    assert 0.4e9 < non_embedding < 0.5e9  # Qwen3-0.6B: 0.44B non-embedding parameters
    assert model.config.head_dim == 128 and model.config._attn_implementation == "sdpa"
    assert gpu.pretrain.packing and gpu.think_sft.gradient_checkpointing


def test_packed_pretraining_fills_every_row(micro_problems, micro_tokenizer_dir, tmp_path):
    from dataclasses import replace

    from pipelines.data.datasets import build_corpus
    from pipelines.training.recipes import pretrain_base
    from tests.pipelines.conftest import MICRO_SHAPE

    texts = [d["text"] for d in build_corpus(micro_problems)]
    settings = replace(micro_settings(2), packing=True, max_length=128)  # longer than any document
    summary = pretrain_base(texts, micro_tokenizer_dir, MICRO_SHAPE, settings, tmp_path / "packed")
    full_rows = 2 * settings.batch_size * settings.max_length
    assert summary.tokens >= 0.9 * full_rows  # rows are full windows (one remainder row may be shorter)
    unpacked = pretrain_base(texts, micro_tokenizer_dir, MICRO_SHAPE, replace(settings, packing=False),
                             tmp_path / "unpacked")
    assert unpacked.tokens < 0.75 * summary.tokens  # one short document per row
    AutoModelForCausalLM.from_pretrained(tmp_path / "packed")
