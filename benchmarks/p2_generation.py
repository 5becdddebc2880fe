"""P2: eval generation, the project's engine vs lm-evaluation-harness's HF backend (samples/s).

Same local model directory, same GSM8K test questions in the base prompt format, greedy, the same
max new tokens and batch size. Both stop at the model's end-of-sequence tokens; lm-eval additionally
checks its string stop sequences (here only the EOS string) on every step, as its ``generate_until``
always does. Model loading is not timed for either.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.data import gsm8k_rows
from benchmarks.harness import BenchRow
from benchmarks.models import build_local_model
from pipelines.data.formats import base_prompt
from pipelines.evaluation.generation import generate, load_for_generation
from pipelines.profiles import TINY

ID, MEASUREMENT, TARGET = "P2", "eval generation vs lm-eval HFLM (samples/s)", "≥ 2×"
MIN_SPEEDUP = 2.0


@dataclass(frozen=True)
class GenerationBench:
    prompts: int = 128
    repeats: int = 5  # interleaved ours/theirs rounds; the best of each counts (the machine is shared), as in P1
    max_new_tokens: int = TINY.eval.max_new_tokens
    batch_size: int = TINY.eval.batch_size
    threads: int = 1  # torch intra-op threads for both engines: 2 thrash when the 2 cores are shared


QUICK = GenerationBench(prompts=16, max_new_tokens=8, batch_size=8, repeats=1)


def lm_eval_available() -> bool:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        return False
    return True


def _lm_eval_generate(harness, prompts: list[str], bench: GenerationBench) -> tuple[float, list[str]]:
    from lm_eval.api.instance import Instance

    requests = [Instance(request_type="generate_until", doc={}, idx=index,
                         arguments=(prompt, {"until": [], "max_gen_toks": bench.max_new_tokens, "do_sample": False}))
                for index, prompt in enumerate(prompts)]
    started = time.perf_counter()
    outputs = harness.generate_until(requests, disable_tqdm=True)
    return time.perf_counter() - started, outputs


def run(quick: bool = False) -> BenchRow:
    bench = QUICK if quick else GenerationBench()
    if not lm_eval_available():
        return BenchRow.not_run(ID, MEASUREMENT, TARGET, "lm_eval not installed (pip install -e '.[bench]')")
    import torch

    torch.set_num_threads(bench.threads)
    started = time.perf_counter()
    prompts = [base_prompt(row["question"]) for row in gsm8k_rows("test")[:bench.prompts]]
    with tempfile.TemporaryDirectory(prefix="bench-p2-") as scratch:
        model_dir = build_local_model(Path(scratch), quick=quick)
        from lm_eval.models.huggingface import HFLM

        model, tokenizer = load_for_generation(model_dir)
        harness = HFLM(pretrained=str(model_dir), batch_size=bench.batch_size, device="cpu")
        generate(model, tokenizer, prompts[:2], 2, 2)  # warm-up, untimed (first-call allocations)
        _lm_eval_generate(harness, prompts[:2], bench)
        ours_runs, theirs_runs = [], []
        for _ in range(bench.repeats):
            ours_runs.append(generate(model, tokenizer, prompts, bench.max_new_tokens, bench.batch_size))
            theirs_runs.append(_lm_eval_generate(harness, prompts, bench))
    ours_run = min(ours_runs, key=lambda run: run.seconds)
    theirs_seconds, theirs_outputs = min(theirs_runs, key=lambda run: run[0])
    ours = ours_run.samples_per_second
    theirs = len(prompts) / theirs_seconds
    same = sum(a.text == b.strip() for a, b in zip(ours_run.generations, theirs_outputs))
    speedup = ours / theirs
    notes = (f"{len(prompts)} GSM8K test prompts, greedy, max_new_tokens {bench.max_new_tokens}, batch "
             f"{bench.batch_size}, random-init tiny Qwen3 (profile shape); ours {ours_run.seconds:.1f}s, "
             f"lm-eval {theirs_seconds:.1f}s (best of {bench.repeats}, interleaved); identical outputs {same}/{len(prompts)}")
    return BenchRow(ID, MEASUREMENT, round(ours, 2), round(theirs, 2), round(speedup, 2), TARGET,
                    speedup >= MIN_SPEEDUP, unit="samples/s", notes=notes,
                    seconds=round(time.perf_counter() - started, 1))
