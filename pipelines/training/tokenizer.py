"""A byte-level BPE tokenizer trained on the corpus, with digits split and a ChatML chat template.

Digits are split individually so arithmetic is learnable by a tiny model (every number is a sequence
of digit tokens). Byte-level BPE never produces an unknown token. The chat template carries
``{% generation %}`` markers so TRL's ``assistant_only_loss`` works with it too.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pipelines.data.formats import THINK_CLOSE, THINK_OPEN

END_OF_TEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = [END_OF_TEXT, IM_START, IM_END, PAD]
# Think tags are ordinary added tokens (not "special"), so decoding keeps them in the output text.
THINK_TOKENS = [THINK_OPEN, THINK_CLOSE]

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}{% generation %}{{- message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{{- '\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int, output_dir: Path):
    """Train on ``texts`` and save a directory that ``AutoTokenizer.from_pretrained`` loads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS + THINK_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=None, eos_token=IM_END, pad_token=PAD, unk_token=None,
        additional_special_tokens=[END_OF_TEXT, IM_START], padding_side="left")
    wrapped.add_tokens(THINK_TOKENS)
    wrapped.chat_template = CHAT_TEMPLATE
    wrapped.model_max_length = 1024
    output_dir.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(output_dir)
    return wrapped
