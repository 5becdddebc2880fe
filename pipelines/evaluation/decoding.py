"""Decoding per variant, as the paper evaluates each kind of model fairly.

- base: CoT decoding (top-K first-token branches, greedy continuation, answer-confidence selection);
  every branch is stored, the selected one is flagged, and pass@K over branches is computable.
- instruct: low-temperature sampling, n samples per item.
- reasoning: thinking-mode sampling (higher temperature, room for <think>), n samples per item.
Every sample row records its seed and decoding config so results are reproducible and comparable.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from pipelines.data.formats import THINK_CLOSE, THINK_OPEN
from pipelines.evaluation.backends import BACKENDS, HF, TransformersBackend, load_backend
from pipelines.evaluation import ray_generation
from pipelines.evaluation.cot_decoding import cot_decode_batch
from pipelines.evaluation.prompts import BASE, build_prompt
from pipelines.training.chat_options import ChatOptions
from pipelines.training.checkpoint_record import recorded_chat_options
from pipelines.training.stop_tokens import stop_token_ids


DECODING_METHODS = ("cot", "sample", "greedy")


@dataclass(frozen=True)
class Decoding:
    method: str  # "cot" | "sample" | "greedy"
    max_new_tokens: int
    batch_size: int
    seed: int
    samples: int = 1  # n for sampling, K branches for CoT decoding
    temperature: float = 0.0
    stop_strings: tuple[str, ...] = ()  # cut from the output; e.g. a base model starting the next "Question:"
    backend: str = HF  # hf | vllm (same interface; CoT decoding needs hf)
    few_shot: int = 0  # worked exemplars from the training split before each question (prompts.few_shot_turns)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop_strings", tuple(self.stop_strings))  # Launchpad config gives lists
        if self.method not in DECODING_METHODS:
            raise ValueError(f"unknown decoding method '{self.method}', expected one of {DECODING_METHODS}")
        if self.samples < 1:
            raise ValueError(f"decoding needs at least 1 sample/branch, got {self.samples}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown generation backend '{self.backend}', expected one of {BACKENDS}")
        if self.few_shot < 0:
            raise ValueError(f"few_shot must be >= 0, got {self.few_shot}")
        if self.method == "cot" and self.backend != HF:
            raise ValueError("CoT decoding reads per-step logits of each branch: it needs backend 'hf'")

    def describe(self) -> str:
        described = asdict(self)
        if not self.few_shot:  # zero-shot describes itself as before few-shot existed: stored rows stay reusable
            described.pop("few_shot")
        return json.dumps(described, sort_keys=True)


def shot_settings(decoding: Decoding, compare_shots: list[int]) -> list[Decoding]:
    """The decoding per exemplar count: the configured ``few_shot`` first (the headline of the main tables),
    then each other count of ``compare_shots`` (the report's zero- vs few-shot table)."""
    if any(n < 0 for n in compare_shots):
        raise ValueError(f"compare_shots must be exemplar counts >= 0, got {compare_shots}")
    counts = [decoding.few_shot] + [n for n in dict.fromkeys(compare_shots) if n != decoding.few_shot]
    return [replace(decoding, few_shot=n) for n in counts]


def sample_id(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:20]


def split_thinking(text: str, tokenizer) -> tuple[int, int]:
    """(thinking tokens, answer tokens) of an output: the <think>…</think> part vs the rest."""
    if THINK_OPEN in text and THINK_CLOSE in text:
        start, end = text.index(THINK_OPEN), text.rindex(THINK_CLOSE) + len(THINK_CLOSE)
        thinking, answer = text[start:end], text[:start] + text[end:]
    else:
        thinking, answer = "", text
    count = lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"]) if s.strip() else 0  # noqa: E731
    return count(thinking), count(answer)


def prompt_options(variant: str, model_dir: Path, chat: ChatOptions | None = None) -> ChatOptions:
    """The chat options a variant is asked with: ``chat`` if given, else what its checkpoint recorded
    (none for the base variant, which is prompted in the corpus format)."""
    if variant == BASE:
        return ChatOptions()
    return chat if chat is not None else recorded_chat_options(model_dir)


def generate_samples(variant: str, model_dir: Path, items: list[dict], decoding: Decoding,
                     model_version: str, chat: ChatOptions | None = None,
                     exemplars: list[dict] | tuple = ()) -> list[dict]:
    """One row per (item, sample): the stored generations that every grader later reads. ``chat``:
    see ``prompt_options`` (default: the checkpoint's recorded system prompt and template kwargs).
    Generated here, or by a Ray job with ``LLM_LINEAGE_GENERATION_ON=ray`` (``ray_generation.py``): the same rows."""
    chat = prompt_options(variant, model_dir, chat)
    if ray_generation.on_ray():
        return ray_generation.generate_on_ray(variant, model_dir, items, decoding, model_version, chat, list(exemplars))
    return generate_here(variant, model_dir, items, decoding, model_version, chat, exemplars)


def generate_here(variant: str, model_dir: Path, items: list[dict], decoding: Decoding, model_version: str,
                  chat: ChatOptions, exemplars: list[dict] | tuple = ()) -> list[dict]:
    """``generate_samples`` in this process."""
    backend = load_backend(decoding.backend, model_dir)
    tokenizer = backend.tokenizer
    common = {"variant": variant, "model_version": model_version, "decoding": decoding.describe(),
              "few_shot": decoding.few_shot}
    rows: list[dict] = []
    if decoding.method == "cot":
        assert isinstance(backend, TransformersBackend)  # Decoding validates this
        model = backend.model
        stop_ids = stop_token_ids(tokenizer, model.generation_config)  # int or list eos, any family
        ordered = sorted(items, key=lambda item: len(item["question"]))  # similar lengths per batch
        per_batch = max(1, decoding.batch_size // decoding.samples)
        for start in range(0, len(ordered), per_batch):
            batch = ordered[start:start + per_batch]
            prompts = [build_prompt(variant, item["question"], tokenizer, chat, exemplars, item.get("system_prompt"))
                       for item in batch]
            started = time.perf_counter()
            results = cot_decode_batch(model, tokenizer, prompts, decoding.samples, decoding.max_new_tokens, stop_ids,
                                       decoding.stop_strings)
            seconds = (time.perf_counter() - started) / (len(batch) * decoding.samples)
            for item, prompt, result in zip(batch, prompts, results):
                selected = result.branches.index(result.selected)
                for index, branch in enumerate(result.branches):
                    rows.append(_row(common, item, index, decoding.seed, prompt, branch.text, branch.output_tokens,
                                     tokenizer, seconds, selected=index == selected, confidence=branch.confidence))
        return rows
    prompts = [build_prompt(variant, item["question"], tokenizer, chat, exemplars, item.get("system_prompt"))
               for item in items]
    temperature = decoding.temperature if decoding.method == "sample" else 0.0
    seeds = [decoding.seed + index for index in range(decoding.samples)]
    runs = backend.generate_runs(prompts, decoding.max_new_tokens, decoding.batch_size,
                                 [(temperature, seed) for seed in seeds], decoding.stop_strings)
    for index, (seed, run) in enumerate(zip(seeds, runs)):
        per_sample = run.seconds / max(1, len(prompts))
        for item, prompt, generation in zip(items, prompts, run.generations):
            rows.append(_row(common, item, index, seed, prompt, generation.text, generation.output_tokens,
                             tokenizer, per_sample, selected=index == 0, confidence=None))
    return rows


def _row(common: dict, item: dict, index: int, seed: int, prompt: str, text: str, tokens: int, tokenizer,
         seconds: float, selected: bool, confidence: float | None) -> dict:
    thinking, answer = split_thinking(text, tokenizer)
    # n-shot samples of an item are other samples than its zero-shot ones (whose ids predate few-shot)
    shots = (f"shots={common['few_shot']}",) if common["few_shot"] else ()
    return {**common, "sample_id": sample_id(common["variant"], common["model_version"], item["suite"],
                                             item["problem_id"], str(index), *shots),
            "suite": item["suite"], "problem_id": item["problem_id"], "sample_index": index, "seed": seed,
            "prompt": prompt, "output": text, "output_tokens": tokens, "thinking_tokens": thinking,
            "answer_tokens": answer, "selected": selected, "confidence": confidence, "seconds": seconds,
            "gold": item["answer"]}
