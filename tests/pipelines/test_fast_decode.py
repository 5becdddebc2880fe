"""The lean decoder (pipelines/evaluation/fast_decode.py) against ``model.generate`` on real models.

Greedy decoding is deterministic, so the two engines must produce the same tokens: any slip in the
chunked prefill, the merge of its caches, the positions of left-padded rows, the in-place cache or
row compaction changes the argmax somewhere within a few tokens.
"""

from collections import Counter

import pytest

from pipelines.evaluation import fast_decode
from pipelines.evaluation.fast_decode import fast_generate, supports_fast_decode
from pipelines.evaluation.generation import generate, load_for_generation
from pipelines.evaluation.prompts import build_prompt
from pipelines.training.model import ModelShape, init_tiny_qwen3

# Two layers, 4 query heads on 2 K/V heads: grouped-query attention with groups of 2.
GQA_SHAPE = ModelShape(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128,
                       max_positions=256)


def _chaotic(model):
    """Large random weights: at the usual 0.02 scale a fresh model just repeats the prompt's last token
    whatever the positions or the attention do, and a broken cache would go unnoticed."""
    import torch

    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def tokenizer(micro_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(micro_tokenizer_dir, padding_side="left")


@pytest.fixture(scope="module")
def gqa_model(tokenizer):
    return _chaotic(init_tiny_qwen3(GQA_SHAPE, tokenizer, seed=1)), tokenizer


def _prompts(tokenizer, problems, count=7):
    prompts = [build_prompt("base", p.question, tokenizer) for p in problems[:count]]
    prompts[1] += " Explain every step of the reasoning, one line at a time, before the answer."
    prompts[4] = prompts[4][:12]  # a much shorter one: lengths vary within each batch
    return prompts


def _texts(run):
    return [(g.text, g.output_tokens) for g in run.generations]


@pytest.mark.parametrize("batch_size, chunk_tokens", [(3, 1024), (8, 1024), (8, 64)])
def test_greedy_outputs_match_model_generate(gqa_model, micro_base, micro_problems, batch_size, chunk_tokens,
                                             monkeypatch):
    """64-token prefill chunks: every batch is prefilled in several chunks of one or two prompts."""
    monkeypatch.setitem(fast_decode.PREFILL_CHUNK_TOKENS, "cpu", chunk_tokens)
    for model, tokenizer in (gqa_model, load_for_generation(micro_base[0])):
        assert supports_fast_decode(model)
        prompts = _prompts(tokenizer, micro_problems)
        fast = generate(model, tokenizer, prompts, max_new_tokens=20, batch_size=batch_size, engine="fast")
        reference = generate(model, tokenizer, prompts, max_new_tokens=20, batch_size=batch_size, engine="hf")
        assert _texts(fast) == _texts(reference)
        assert len({g.text for g in fast.generations}) > 1


def test_the_prefill_pads_each_chunk_only_to_its_own_longest_prompt(gqa_model, micro_problems, monkeypatch):
    """Length-sorted prompts are prefilled a few at a time within the token budget, each chunk as wide
    as its longest prompt (the outputs above check the merged cache stays exact)."""
    budget = 64
    monkeypatch.setitem(fast_decode.PREFILL_CHUNK_TOKENS, "cpu", budget)
    model, tokenizer = gqa_model
    prompts = _prompts(tokenizer, micro_problems)
    seen: list[tuple] = []
    hook = model.model.layers[0].mlp.register_forward_hook(
        lambda module, args, output: seen.append(tuple(args[0].shape)))
    try:
        fast_generate(model, tokenizer, prompts, 1, stop_ids=[])  # one new token: the prefill only
    finally:
        hook.remove()
    lengths = sorted(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    assert sum(rows for rows, _, _ in seen) == len(prompts)  # every prompt prefilled once
    assert len(seen) > 1 and len({width for _, width, _ in seen}) > 1
    first = 0
    for rows, width, _ in seen:  # each chunk: consecutive sorted prompts, as wide as the longest of them
        assert width == lengths[first + rows - 1]
        assert rows == 1 or rows * width <= budget
        first += rows


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_the_other_supported_architectures_match_model_generate(tokenizer, micro_problems, architecture):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_class, model_class = {"llama": (LlamaConfig, LlamaForCausalLM),
                                 "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[architecture]
    config = config_class(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    model = _chaotic(model_class(config))
    assert supports_fast_decode(model)
    prompts = _prompts(tokenizer, micro_problems)
    fast = generate(model, tokenizer, prompts, max_new_tokens=16, batch_size=4, engine="fast")
    reference = generate(model, tokenizer, prompts, max_new_tokens=16, batch_size=4, engine="hf")
    assert _texts(fast) == _texts(reference)
    assert len({g.text for g in fast.generations}) > 1


def test_rows_that_finish_leave_the_batch_without_changing_the_others(gqa_model, micro_problems):
    """Make a token the model emits mid-output an end-of-sequence token: rows end at different steps
    (compaction runs several times) and every row must still match model.generate's."""
    model, tokenizer = gqa_model
    prompts = _prompts(tokenizer, micro_problems)
    free = fast_generate(model, tokenizer, prompts, 20, stop_ids=[])
    counts = Counter(token for tokens in free for token in set(tokens[2:12]))
    stop_token = counts.most_common(1)[0][0]  # appears in the middle of the most rows
    original = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [stop_token]
    try:
        fast = generate(model, tokenizer, prompts, max_new_tokens=20, batch_size=8, engine="fast")
        reference = generate(model, tokenizer, prompts, max_new_tokens=20, batch_size=8, engine="hf")
    finally:
        model.generation_config.eos_token_id = original
    assert _texts(fast) == _texts(reference)
    lengths = {g.output_tokens for g in fast.generations}
    assert len(lengths) > 1 and min(lengths) < 20  # rows really ended early, at different steps


def test_stop_strings_end_rows_and_leave_the_others_alone(gqa_model, micro_problems):
    """Stop strings are looked for in the output only (as lm-evaluation-harness does; model.generate
    also matches one that starts inside the prompt, so the two engines are not compared here)."""
    from pipelines.evaluation.generation import truncate_at_stop

    model, tokenizer = gqa_model
    prompts = _prompts(tokenizer, micro_problems)
    free = generate(model, tokenizer, prompts, 20, 8, engine="fast")
    row = max(range(len(prompts)), key=lambda index: len(free.generations[index].text))
    stop = free.generations[row].text[5:7]
    stopped = generate(model, tokenizer, prompts, 20, 8, stop_strings=(stop, ""), engine="fast")
    for before, after in zip(free.generations, stopped.generations):
        assert after.text == truncate_at_stop(before.text, (stop,)).strip()
        assert (after.output_tokens < before.output_tokens) == (stop in before.text)
    assert stopped.generations[row].output_tokens < free.generations[row].output_tokens


def test_sampling_is_seeded(gqa_model, micro_problems):
    model, tokenizer = gqa_model
    prompts = _prompts(tokenizer, micro_problems)
    first, again, other = (generate(model, tokenizer, prompts, 16, 4, temperature=1.0, seed=seed, engine="fast")
                           for seed in (5, 5, 6))
    assert _texts(first) == _texts(again)
    assert _texts(first) != _texts(other)
    greedy = generate(model, tokenizer, prompts, 16, 4, engine="fast")
    assert _texts(first) != _texts(greedy)


def test_other_architectures_fall_back_to_model_generate(tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2,
                                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    model.eval()
    assert not supports_fast_decode(model)
    run = generate(model, tokenizer, ["Question: 2 + 3?\nAnswer:"], 6, 1)  # auto: model.generate
    assert run.generations[0].output_tokens == 6
    with pytest.raises(ValueError, match="does not support model type 'gpt2'"):
        generate(model, tokenizer, ["Question: 2 + 3?\nAnswer:"], 6, 1, engine="fast")
    with pytest.raises(ValueError, match="unknown generation engine"):
        generate(model, tokenizer, ["x"], 6, 1, engine="vllm")
