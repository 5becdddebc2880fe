"""CoT decoding on a language model whose every next-token distribution is known by construction."""

import math

import pytest
import torch

from pipelines.evaluation.cot_decoding import cot_decode

VOCAB = ["<eos>", "Q", "a", "b", "c", " ", "#", "5", "8", "9"]
EOS = 0
# After the prompt "Q", continuation prefix -> (next token, p(top-1), runner-up token, p(runner-up)).
FIRST = {"a": 0.5, "b": 0.3, "c": 0.15}  # the first-step distribution (rest spread over other tokens)
SCRIPT = {
    "a": (" ", 0.9, "#", 0.05), "a ": ("5", 0.40, "8", 0.35), "a 5": ("<eos>", 0.9, " ", 0.05),
    "b": (" ", 0.9, "#", 0.05), "b ": ("8", 0.95, "5", 0.02), "b 8": ("<eos>", 0.9, " ", 0.05),
    "c": (" ", 0.9, "#", 0.05), "c ": ("9", 0.60, "8", 0.30), "c 9": ("<eos>", 0.9, " ", 0.05),
}


def _distribution(top: dict[str, float]) -> torch.Tensor:
    rest = (1.0 - sum(top.values())) / (len(VOCAB) - len(top))
    probs = torch.tensor([top.get(token, rest) for token in VOCAB])
    return torch.log(probs)


class ScriptedLM(torch.nn.Module):
    """Logits follow SCRIPT; the prompt is the single token 'Q'."""

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None):
        full = input_ids if past_key_values is None else torch.cat([past_key_values, input_ids], dim=1)
        batch = []
        for row in full.tolist():
            continuation = "".join(VOCAB[t] for t in row[row.index(1) + 1:] if t != EOS)  # after "Q"
            if not continuation:
                batch.append(_distribution(FIRST))
                continue
            token, p1, runner_up, p2 = SCRIPT.get(continuation, ("<eos>", 0.9, " ", 0.05))
            batch.append(_distribution({token: p1, runner_up: p2}))
        logits = torch.stack(batch).unsqueeze(1).repeat(1, input_ids.shape[1], 1)
        return type("Output", (), {"logits": logits, "past_key_values": full})()  # the "cache": tokens so far


class CharTokenizer:
    pad_token_id = EOS

    def __call__(self, text, add_special_tokens=False, return_tensors=None):
        return {"input_ids": torch.tensor([[VOCAB.index(ch) for ch in text]])}

    def decode(self, ids):
        return "".join(VOCAB[i] for i in ids if i != EOS)


def test_branches_follow_the_first_step_distribution_and_the_confident_answer_wins():
    result = cot_decode(ScriptedLM(), CharTokenizer(), "Q", top_k=3, max_new_tokens=6, stop_ids=[EOS])
    assert [b.first_token for b in result.branches] == [VOCAB.index(t) for t in ("a", "b", "c")]
    assert [b.first_token_prob for b in result.branches] == pytest.approx([0.5, 0.3, 0.15])
    assert [b.answer for b in result.branches] == ["5", "8", "9"]
    assert [b.text for b in result.branches] == ["a 5", "b 8", "c 9"]
    # confidence = margin on the answer token: 0.40-0.35, 0.95-0.02, 0.60-0.30
    assert [b.confidence for b in result.branches] == pytest.approx([0.05, 0.93, 0.30])
    assert result.greedy.answer == "5"  # what plain greedy decoding would have answered
    assert result.selected.answer == "8"  # CoT decoding picks the confident path
    assert all(b.output_tokens == 3 for b in result.branches)


def test_a_stop_string_cuts_a_branch_before_its_answer_is_read():
    # "b 8" stopped at " 8": that branch has no answer any more, so the next most confident one wins
    result = cot_decode(ScriptedLM(), CharTokenizer(), "Q", top_k=3, max_new_tokens=6, stop_ids=[EOS],
                        stop_strings=(" 8",))
    assert [b.text for b in result.branches] == ["a 5", "b", "c 9"]
    assert result.branches[1].answer is None and result.branches[1].confidence == 0.0
    assert result.selected.answer == "9"


def test_a_branch_without_an_answer_has_zero_confidence():
    result = cot_decode(ScriptedLM(), CharTokenizer(), "Q", top_k=4, max_new_tokens=6, stop_ids=[EOS])
    unanswered = [b for b in result.branches if b.answer is None]
    assert unanswered and all(b.confidence == 0.0 for b in unanswered)
    assert not math.isnan(result.selected.confidence)


def test_cot_decoding_runs_on_a_real_checkpoint(micro_base, micro_problems):
    from pipelines.data.formats import base_prompt
    from pipelines.evaluation.generation import load_for_generation

    model, tokenizer = load_for_generation(micro_base[0])
    result = cot_decode(model, tokenizer, base_prompt(micro_problems[0].question), top_k=3, max_new_tokens=8,
                        stop_ids=list(model.generation_config.eos_token_id))
    probs = [b.first_token_prob for b in result.branches]
    assert len({b.first_token for b in result.branches}) == 3 and probs == sorted(probs, reverse=True)
    assert all(0 < b.output_tokens <= 8 and 0.0 <= b.confidence <= 1.0 for b in result.branches)


def test_a_transformers_model_gets_its_cache_without_the_deprecated_argument(micro_base, micro_problems):
    """transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warned on every step and is
    removed in 5.40); the ScriptedLM above keeps the old name, as remote-code models do, and still works."""
    import warnings

    from pipelines.data.formats import base_prompt
    from pipelines.evaluation.generation import load_for_generation

    model, tokenizer = load_for_generation(micro_base[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        result = cot_decode(model, tokenizer, base_prompt(micro_problems[0].question), top_k=2, max_new_tokens=4,
                            stop_ids=list(model.generation_config.eos_token_id))
    assert len(result.branches) == 2


def test_batched_prompts_of_different_lengths_match_one_at_a_time(micro_base, micro_problems):
    from pipelines.data.formats import base_prompt
    from pipelines.evaluation.cot_decoding import cot_decode_batch
    from pipelines.evaluation.generation import load_for_generation

    model, tokenizer = load_for_generation(micro_base[0])
    stop = list(model.generation_config.eos_token_id)
    prompts = [base_prompt(p.question) for p in micro_problems[:3]]
    prompts[1] += " Answer carefully."  # different lengths: left padding must not change any branch
    batched = cot_decode_batch(model, tokenizer, prompts, top_k=3, max_new_tokens=10, stop_ids=stop)
    single = [cot_decode(model, tokenizer, p, top_k=3, max_new_tokens=10, stop_ids=stop) for p in prompts]
    assert [[b.text for b in r.branches] for r in batched] == [[b.text for b in r.branches] for r in single]
    assert [[round(b.confidence, 4) for b in r.branches] for r in batched] == \
        [[round(b.confidence, 4) for b in r.branches] for r in single]
