"""Generation backends behind one interface: transformers (default, CPU or GPU) and vLLM (GPU, optional).

``Decoding.backend`` picks one. Both take the same prompts, sampling settings and stop strings and
return the same ``GenerationRun``, so stored generations and grading do not depend on the engine.
CoT decoding reads per-step logits of the first-token branches and stays on the transformers backend.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

from pipelines.evaluation.generation import Generation, GenerationRun, generate, load_for_generation, truncate_at_stop

HF = "hf"
VLLM = "vllm"
BACKENDS = (HF, VLLM)


class GenerationBackend(Protocol):
    name: str
    tokenizer: object

    def generate(self, prompts: list[str], max_new_tokens: int, batch_size: int, temperature: float, seed: int,
                 stop_strings: tuple[str, ...]) -> GenerationRun: ...


class TransformersBackend:
    """``model.generate`` with length-sorted left-padded batches and the KV cache."""

    name = HF

    def __init__(self, model_dir: Path):
        self.model, self.tokenizer = load_for_generation(model_dir)

    def generate(self, prompts, max_new_tokens, batch_size, temperature, seed, stop_strings):
        return generate(self.model, self.tokenizer, prompts, max_new_tokens, batch_size,
                        temperature=temperature, seed=seed, stop_strings=stop_strings)


class VllmBackend:
    """vLLM's offline engine (continuous batching, paged KV cache) where vLLM is installed."""

    name = VLLM

    def __init__(self, model_dir: Path):
        try:
            import vllm
        except ImportError as error:
            raise RuntimeError("decoding backend 'vllm' needs the vllm package (GPU machines: "
                               "`pip install vllm`); use backend 'hf' otherwise") from error
        from transformers import AutoTokenizer

        from pipelines.training.checkpoint_record import trusts_remote_code

        trust = trusts_remote_code(model_dir)  # as recorded when its base was imported
        self._vllm = vllm
        self.engine = vllm.LLM(model=str(model_dir), trust_remote_code=trust)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left", trust_remote_code=trust)

    def generate(self, prompts, max_new_tokens, batch_size, temperature, seed, stop_strings):
        params = self._vllm.SamplingParams(n=1, temperature=temperature, max_tokens=max_new_tokens,
                                           stop=list(stop_strings) or None, seed=seed)
        started = time.perf_counter()
        outputs = self.engine.generate(prompts, params, use_tqdm=False)
        generations = [Generation(truncate_at_stop(o.outputs[0].text, stop_strings).strip(), len(o.outputs[0].token_ids))
                       for o in outputs]
        return GenerationRun(generations, time.perf_counter() - started)


def load_backend(name: str, model_dir: Path) -> GenerationBackend:
    if name == HF:
        return TransformersBackend(model_dir)
    if name == VLLM:
        return VllmBackend(model_dir)
    raise ValueError(f"unknown generation backend '{name}', expected one of {BACKENDS}")
