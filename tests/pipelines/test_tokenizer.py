from transformers import AutoTokenizer

from pipelines.data.formats import think_completion


def test_tokenizer_directory_loads_and_splits_digits(micro_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(micro_tokenizer_dir)
    tokens = tokenizer.tokenize("Tom has 1234 apples")
    assert [t for t in tokens if t.strip("Ġ").isdigit()] == ["1", "2", "3", "4"]
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|pad|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


def test_chat_template_round_trips_think_tags(micro_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(micro_tokenizer_dir)
    completion = think_completion("2 + 3 = 5.", "5")
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "2 + 3?"}, {"role": "assistant", "content": completion}], tokenize=False)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "2 + 3?"}], tokenize=False,
                                           add_generation_prompt=True)
    assert text.startswith(prompt)  # TRL's prompt/completion split relies on this prefix property
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    assert completion in decoded and "<|im_end|>" not in decoded  # think tags survive, specials do not
    assert tokenizer.convert_tokens_to_ids("<think>") in ids
