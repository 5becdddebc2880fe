import pytest

from pipelines.evaluation.generation import generate, load_for_generation
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
