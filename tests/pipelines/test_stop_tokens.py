"""Stop tokens of any family (issue #16): an int or a list ``eos_token_id`` works in every decoder, and a
checkpoint trained from a non-ChatML base stops on its own family's tokens, not ``[null, null]``."""

import pytest
from transformers import AutoTokenizer, GenerationConfig

from pipelines.evaluation.decoding import Decoding, generate_samples
from pipelines.evaluation.generation import generate, load_for_generation
from pipelines.training.recipes import TrainSettings, sft
from pipelines.training.stop_tokens import as_id_list, stop_token_ids
from tests.fixtures.hf_models import generation_config, save_llama3_instruct, save_qwen3_base

ITEMS = [{"suite": "s", "problem_id": f"p{i}", "question": q, "answer": a} for i, (q, a) in enumerate(
    [("Tom has 3 apples and buys 4 more. How many apples does he have?", "7"), ("What is 2 + 5?", "7")])]


@pytest.fixture(scope="module")
def qwen3_base(tmp_path_factory):
    return save_qwen3_base(tmp_path_factory.mktemp("qwen3_base"))


@pytest.fixture(scope="module")
def llama3_base(tmp_path_factory):
    return save_llama3_instruct(tmp_path_factory.mktemp("llama3_base"))


def _ids(directory, *tokens):
    tokenizer = AutoTokenizer.from_pretrained(directory)
    return [tokenizer.convert_tokens_to_ids(token) for token in tokens]


def test_each_family_stops_on_its_own_tokens(qwen3_base, llama3_base, micro_tokenizer_dir):
    """Qwen3-Base: its int eos plus the template's <|im_end|>; Llama-3: both of its list, <|eot_id|> being
    also the template's turn end; the lineage's own ChatML tokenizer: <|im_end|>."""
    qwen, llama = AutoTokenizer.from_pretrained(qwen3_base), AutoTokenizer.from_pretrained(llama3_base)
    assert generation_config(qwen3_base)["eos_token_id"] == qwen.convert_tokens_to_ids("<|endoftext|>")  # an int
    assert stop_token_ids(qwen, GenerationConfig.from_pretrained(qwen3_base)) == \
        _ids(qwen3_base, "<|endoftext|>", "<|im_end|>")
    assert stop_token_ids(llama, GenerationConfig.from_pretrained(llama3_base)) == \
        _ids(llama3_base, "<|end_of_text|>", "<|eot_id|>")
    assert stop_token_ids(AutoTokenizer.from_pretrained(micro_tokenizer_dir)) == \
        _ids(micro_tokenizer_dir, "<|im_end|>")
    assert as_id_list(7) == [7] and as_id_list([1, None, 2]) == [1, 2] and as_id_list(None) == []


@pytest.mark.parametrize("method", ["cot", "greedy"])
def test_a_base_with_an_int_eos_decodes(qwen3_base, method):
    """eval_base on a Qwen3-Base-style checkpoint (``eos_token_id: 151643``) crashed with
    ``'int' object is not iterable`` in CoT decoding."""
    decoding = Decoding(method=method, max_new_tokens=6, batch_size=4, seed=0, samples=2 if method == "cot" else 1)
    rows = generate_samples("base", qwen3_base, ITEMS, decoding, model_version="v")
    assert len(rows) == len(ITEMS) * decoding.samples
    assert all(0 < row["output_tokens"] <= 6 for row in rows)


def test_a_checkpoint_trained_from_a_llama3_base_stops_at_eot(llama3_base, tmp_path):
    """SFT of the Llama-3-style base publishes its family's stop ids, and the project's decoders stop there:
    trained to answer and end the turn, it answers in a token or two instead of running to the limit."""
    rows = [{"prompt": item["question"], "completion": item["answer"]} for item in ITEMS] * 8
    settings = TrainSettings(max_steps=12, batch_size=8, learning_rate=3e-2, max_length=64, seed=0, logging_steps=10)
    sft(llama3_base, rows, settings, tmp_path / "sft")
    eos = generation_config(tmp_path / "sft")["eos_token_id"]
    assert eos == _ids(llama3_base, "<|end_of_text|>", "<|eot_id|>")
    model, tokenizer = load_for_generation(tmp_path / "sft")
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": item["question"]}], tokenize=False,
                                             add_generation_prompt=True) for item in ITEMS]
    for engine in ("fast", "hf"):
        run = generate(model, tokenizer, prompts, max_new_tokens=24, batch_size=2, engine=engine)
        assert [g.text for g in run.generations] == ["7", "7"], engine
        assert all(g.output_tokens <= 2 for g in run.generations), engine
