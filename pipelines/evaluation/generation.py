"""Batched generation (greedy or sampled): length-sorted batches, KV cache, stop tokens, stop strings,
max tokens; the lean decoder of ``fast_decode.py`` where the architecture allows, else ``model.generate``.

Sorting prompts by length keeps padding small; results are returned in the caller's order. A row stops
at EOS or at the first stop string (which is cut from the text, as lm-evaluation-harness does).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.evaluation.fast_decode import fast_generate, supports_fast_decode
from pipelines.training.stop_tokens import stop_token_ids

AUTO, FAST, HF = "auto", "fast", "hf"
ENGINES = (AUTO, FAST, HF)


@dataclass(frozen=True)
class Generation:
    text: str
    output_tokens: int


@dataclass(frozen=True)
class GenerationRun:
    generations: list[Generation]
    seconds: float

    @property
    def samples_per_second(self) -> float:
        return len(self.generations) / self.seconds if self.seconds else float("inf")


def load_for_generation(model_dir: Path):
    """Model and tokenizer of a checkpoint; remote code runs only where its record opted in at import."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipelines.training.checkpoint_record import trusts_remote_code
    from pipelines.training.recipes import OWN_CHECKPOINT

    trust = trusts_remote_code(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left", trust_remote_code=trust)
    model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=trust, **OWN_CHECKPOINT)
    model.eval()
    return model, tokenizer


def truncate_at_stop(text: str, stop_strings: tuple[str, ...] | list[str]) -> str:
    """``text`` up to the earliest stop string (excluded)."""
    cut = min((text.find(stop) for stop in stop_strings if stop and stop in text), default=len(text))
    return text[:cut]


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int,
             temperature: float = 0.0, seed: int = 0, stop_strings: tuple[str, ...] = (),
             engine: str = AUTO) -> GenerationRun:
    """Greedy when ``temperature`` is 0, else seeded sampling; one output per prompt, in prompt order.

    ``engine``: ``fast`` (``fast_decode.py``: ragged prefill, in-place KV cache, finished rows leave
    the batch), ``hf`` (``model.generate``), ``auto`` (fast where the architecture supports it).
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown generation engine '{engine}', expected one of {ENGINES}")
    if engine == FAST and not supports_fast_decode(model):
        raise ValueError(f"engine 'fast' does not support model type '{model.config.model_type}'; use 'hf'")
    stop_strings = tuple(stop for stop in stop_strings if stop)  # "" would stop every row at once
    use_fast = engine == FAST or (engine == AUTO and supports_fast_decode(model))
    decode_batch = (_fast_decoder if use_fast else _hf_decoder)(model, tokenizer, max_new_tokens, temperature, seed,
                                                                 stop_strings)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: dict[int, Generation] = {}
    started = time.perf_counter()
    for start in range(0, len(order), batch_size):
        batch_ids = order[start:start + batch_size]
        for index, tokens in zip(batch_ids, decode_batch([prompts[i] for i in batch_ids])):
            produced = sum(token != tokenizer.pad_token_id for token in tokens)
            text = truncate_at_stop(tokenizer.decode(tokens, skip_special_tokens=True), stop_strings)
            results[index] = Generation(text.strip(), produced)
    return GenerationRun([results[i] for i in range(len(prompts))], time.perf_counter() - started)


def _fast_decoder(model, tokenizer, max_new_tokens, temperature, seed, stop_strings):
    """prompts -> new token ids per prompt, with ``fast_decode.py``."""
    import torch

    generator = torch.Generator(device=model.device).manual_seed(seed) if temperature > 0 else None
    stop_ids = stop_token_ids(tokenizer, model.generation_config)
    return lambda batch: fast_generate(model, tokenizer, batch, max_new_tokens, stop_ids, temperature, generator,
                                       stop_strings)


def _hf_decoder(model, tokenizer, max_new_tokens, temperature, seed, stop_strings):
    """prompts -> new token ids per prompt (padded after a row's end), with ``model.generate``."""
    import torch

    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0} if temperature > 0 else {"do_sample": False}
    if stop_strings:  # stops each row early inside generate(); the text is cut afterwards
        sampling |= {"stop_strings": list(stop_strings), "tokenizer": tokenizer}
    if temperature > 0:
        torch.manual_seed(seed)
    stop_ids = stop_token_ids(tokenizer, model.generation_config)

    def decode(batch: list[str]) -> list[list[int]]:
        encoded = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            output = model.generate(**encoded, max_new_tokens=max_new_tokens, **sampling, use_cache=True,
                                    eos_token_id=stop_ids or None, pad_token_id=tokenizer.pad_token_id)
        return output[:, encoded["input_ids"].shape[1]:].tolist()

    return decode
