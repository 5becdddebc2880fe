
import pytest

from pipelines.evaluation.backends import load_backend
from pipelines.evaluation.decoding import Decoding
from pipelines.evaluation.generation import generate, load_for_generation, truncate_at_stop
from pipelines.evaluation.prompts import build_prompt


def test_batched_generation_matches_one_by_one(micro_base, micro_problems):
    """Left padding and length sorting must not change greedy outputs, and order is preserved."""
    model, tokenizer = load_for_generation(micro_base[0])
    prompts = [build_prompt("base", p.question, tokenizer) for p in micro_problems[:6]]
    prompts[2] = prompts[2] + " Think about it carefully first."  # lengths differ within a batch
    batched = generate(model, tokenizer, prompts, max_new_tokens=12, batch_size=4)
    single = [generate(model, tokenizer, [p], max_new_tokens=12, batch_size=1).generations[0] for p in prompts]
    assert [g.text for g in batched.generations] == [g.text for g in single]
    assert all(0 < g.output_tokens <= 12 for g in batched.generations)
    assert batched.samples_per_second > 0


def test_chat_variants_use_the_chat_template(micro_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(micro_tokenizer_dir)
    assert build_prompt("base", "Q?", tokenizer) == "Question: Q?\nAnswer:"
    assert build_prompt("instruct", "Q?", tokenizer).endswith("<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="unknown variant"):
        build_prompt("judge", "Q?", tokenizer)


def test_stop_strings_end_rows_early_and_are_cut(micro_base, micro_problems):
    model, tokenizer = load_for_generation(micro_base[0])
    prompt = build_prompt("base", micro_problems[0].question, tokenizer)
    sample = dict(max_new_tokens=24, batch_size=1, temperature=1.0, seed=3)  # varied text, same draws
    free = generate(model, tokenizer, [prompt], **sample).generations[0]
    stop = next(free.text[i:i + 2] for i in range(4, len(free.text) - 1) if free.text[i:i + 2].strip() == free.text[i:i + 2])
    stopped = generate(model, tokenizer, [prompt], **sample, stop_strings=(stop,)).generations[0]
    assert stopped.text == truncate_at_stop(free.text, (stop,)).strip() and stop not in stopped.text
    assert stopped.output_tokens <= free.output_tokens


def test_truncate_at_stop_uses_the_earliest_stop():
    assert truncate_at_stop("7 #### 7\nQuestion: next", ("\nQuestion:", "####")) == "7 "
    assert truncate_at_stop("no stop here", ("\nQuestion:",)) == "no stop here"
    assert truncate_at_stop("text", ()) == "text"


def test_backends_share_one_interface(micro_base, micro_problems):
    backend = load_backend("hf", micro_base[0])
    prompts = [build_prompt("instruct", p.question, backend.tokenizer) for p in micro_problems[:3]]
    run = backend.generate(prompts, max_new_tokens=8, batch_size=2, temperature=0.0, seed=0, stop_strings=())
    direct = generate(backend.model, backend.tokenizer, prompts, max_new_tokens=8, batch_size=2)
    assert [g.text for g in run.generations] == [g.text for g in direct.generations]
    with pytest.raises(ValueError, match="unknown generation backend"):
        load_backend("tgi", micro_base[0])


def test_cot_decoding_needs_the_transformers_backend():
    with pytest.raises(ValueError, match="needs backend 'hf'"):
        Decoding("cot", max_new_tokens=8, batch_size=2, seed=0, backend="vllm")
    assert Decoding("sample", 8, 2, 0, stop_strings=["\nQ:"]).stop_strings == ("\nQ:",)
