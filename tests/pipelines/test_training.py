"""Real TRL training steps on a micro model: every recipe produces a directory transformers loads."""

import math

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pipelines.data.datasets import build_preference, build_sft, build_think
from pipelines.training.recipes import dpo, sft
from tests.pipelines.conftest import micro_settings


def _loads(directory):
    model = AutoModelForCausalLM.from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert model.config.vocab_size == len(tokenizer)
    return model


def test_pretraining_learns_and_saves_a_loadable_model(micro_base):
    directory, summary = micro_base
    assert summary.steps == 4 and len(summary.loss_history) == 4
    assert all(math.isfinite(loss) for _, loss in summary.loss_history)
    assert summary.loss_history[-1][1] < summary.loss_history[0][1]
    model = _loads(directory)
    assert model.generation_config.eos_token_id  # generation stops at <|im_end|> / <|endoftext|>


def test_sft_changes_weights_and_keeps_the_tokenizer(micro_base, micro_problems, tmp_path):
    base_dir, _ = micro_base
    summary = sft(base_dir, build_sft(micro_problems), micro_settings(3), tmp_path / "instruct")
    assert summary.steps == 3 and summary.examples == len(build_sft(micro_problems))
    before, after = _loads(base_dir), _loads(tmp_path / "instruct")
    assert not torch.equal(before.lm_head.weight, after.lm_head.weight)


def test_reasoning_branch_runs_think_sft_then_dpo(micro_base, micro_problems, tmp_path):
    base_dir, _ = micro_base
    think = sft(base_dir, build_think(micro_problems), micro_settings(2), tmp_path / "think", recipe="think_sft")
    preference = dpo(tmp_path / "think", build_preference(micro_problems, 0), micro_settings(2, batch_size=4), 0.1,
                     tmp_path / "reasoning")
    assert [think.recipe, preference.recipe] == ["think_sft", "dpo"]
    assert think.steps == preference.steps == 2
    _loads(tmp_path / "reasoning")
