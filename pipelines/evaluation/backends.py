"""Generation backends behind one interface: transformers (default, CPU or GPU) and vLLM (own virtualenv).

``Decoding.backend`` picks one. Both take the same prompts, sampling settings and stop strings and
return the same ``GenerationRun``, so stored generations and grading do not depend on the engine.
CoT decoding reads per-step logits of the first-token branches and stays on the transformers backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pipelines.evaluation.generation import Generation, GenerationRun, generate, load_for_generation, truncate_at_stop
from pipelines.evaluation.vllm_launch import VllmSettings, run_worker
from pipelines.training.stop_tokens import stop_token_ids

HF = "hf"
VLLM = "vllm"
BACKENDS = (HF, VLLM)


class GenerationBackend(Protocol):
    name: str
    tokenizer: object

    def generate(self, prompts: list[str], max_new_tokens: int, batch_size: int, temperature: float, seed: int,
                 stop_strings: tuple[str, ...]) -> GenerationRun: ...

    def generate_runs(self, prompts: list[str], max_new_tokens: int, batch_size: int,
                      runs: list[tuple[float, int]], stop_strings: tuple[str, ...]) -> list[GenerationRun]:
        """One ``GenerationRun`` per (temperature, seed), in order."""


class TransformersBackend:
    """``model.generate`` with length-sorted left-padded batches and the KV cache."""

    name = HF

    def __init__(self, model_dir: Path):
        self.model, self.tokenizer = load_for_generation(model_dir)

    def generate(self, prompts, max_new_tokens, batch_size, temperature, seed, stop_strings):
        return generate(self.model, self.tokenizer, prompts, max_new_tokens, batch_size,
                        temperature=temperature, seed=seed, stop_strings=stop_strings)

    def generate_runs(self, prompts, max_new_tokens, batch_size, runs, stop_strings):
        return [self.generate(prompts, max_new_tokens, batch_size, temperature, seed, stop_strings)
                for temperature, seed in runs]


class VllmBackend:
    """vLLM's offline engine (continuous batching, paged KV cache) in its own virtualenv (``vllm_launch.py``).

    Prompts are tokenized and outputs decoded here, with the tokenizer and stop ids ``hf`` uses, so the two
    backends differ only in the engine: greedy outputs are the same (float32)."""

    name = VLLM

    def __init__(self, model_dir: Path, settings: VllmSettings | None = None):
        from transformers import AutoTokenizer, GenerationConfig

        from pipelines.training.checkpoint_record import trusts_remote_code

        self.settings = settings or VllmSettings.from_env()
        self.settings.checked_python()  # a missing environment fails before the tokenizer loads
        self.model_dir = Path(model_dir)
        self.trust = trusts_remote_code(model_dir)  # as recorded when its base was imported
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left", trust_remote_code=self.trust)
        try:
            generation_config = GenerationConfig.from_pretrained(model_dir)
        except OSError:  # no generation_config.json: the tokenizer's eos only
            generation_config = None
        self.stop_ids = stop_token_ids(self.tokenizer, generation_config)

    def generate(self, prompts, max_new_tokens, batch_size, temperature, seed, stop_strings):
        return self.generate_runs(prompts, max_new_tokens, batch_size, [(temperature, seed)], stop_strings)[0]

    def generate_runs(self, prompts, max_new_tokens, batch_size, runs, stop_strings):
        """One engine start for every (temperature, seed) run of the same prompts."""
        stop_strings = tuple(stop for stop in stop_strings if stop)
        job = {"model_dir": str(self.model_dir), "trust_remote_code": self.trust, "max_new_tokens": max_new_tokens,
               "prompt_token_ids": [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts],
               "stop_token_ids": self.stop_ids, "stop_strings": list(stop_strings),
               "runs": [{"temperature": temperature, "seed": seed} for temperature, seed in runs]}
        result = run_worker(self.settings, job)
        return [GenerationRun([self._generation(ids, stop_strings) for ids in run["token_ids"]], run["seconds"])
                for run in result["runs"]]

    def _generation(self, token_ids: list[int], stop_strings: tuple[str, ...]) -> Generation:
        text = truncate_at_stop(self.tokenizer.decode(token_ids, skip_special_tokens=True), stop_strings)
        return Generation(text.strip(), sum(t != self.tokenizer.pad_token_id for t in token_ids))  # as hf counts


def load_backend(name: str, model_dir: Path) -> GenerationBackend:
    if name == HF:
        return TransformersBackend(model_dir)
    if name == VLLM:
        return VllmBackend(model_dir)
    raise ValueError(f"unknown generation backend '{name}', expected one of {BACKENDS}")
