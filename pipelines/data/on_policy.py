"""Self-improvement data: sample the think-SFT model on training prompts and grade it with the verifier.

Correct and incorrect samples for the same prompt become an on-policy preference pair (the model's own
mistakes are the rejected side); correct traces are kept as extra think data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipelines.data.formats import prompt_messages
from pipelines.evaluation.backends import HF, load_backend
from pipelines.evaluation.grading import extract_final_answer, is_correct
from pipelines.training.checkpoint_record import recorded_chat_options


@dataclass(frozen=True)
class OnPolicySettings:
    prompts: int
    samples_per_prompt: int
    temperature: float
    max_new_tokens: int
    batch_size: int
    seed: int
    backend: str = HF  # hf | vllm (pipelines/evaluation/backends.py)


@dataclass
class OnPolicyData:
    pairs: list[dict]
    correct_traces: list[dict]
    samples: int
    correct: int


def sample_on_policy(model_dir: Path, train_rows: list[dict], settings: OnPolicySettings) -> OnPolicyData:
    """``train_rows`` need prompt/answer/problem_id (e.g. the think dataset)."""
    backend = load_backend(settings.backend, model_dir)
    tokenizer = backend.tokenizer
    rows = train_rows[: settings.prompts]
    expanded = [row for row in rows for _ in range(settings.samples_per_prompt)]
    chat = recorded_chat_options(model_dir)  # asked as it was trained: its system prompt, template kwargs
    prompts = [chat.generation_prompt(tokenizer, prompt_messages(row)) for row in expanded]  # the row's own turns
    run = backend.generate(prompts, settings.max_new_tokens, settings.batch_size, temperature=settings.temperature,
                           seed=settings.seed, stop_strings=())
    samples = [(row, generation.text) for row, generation in zip(expanded, run.generations)]
    return pair_graded_samples(rows, samples)


def pair_graded_samples(rows: list[dict], samples: list[tuple[dict, str]]) -> OnPolicyData:
    """Grade each (row, output) sample; pair a correct with a wrong output of the same prompt."""
    by_problem: dict[str, dict[str, list[str]]] = {r["problem_id"]: {"correct": [], "wrong": []} for r in rows}
    for row, text in samples:
        verdict = "correct" if is_correct(extract_final_answer(text), row["answer"]) else "wrong"
        by_problem[row["problem_id"]][verdict].append(text)
    pairs, traces = [], []
    for row in rows:
        outcome = by_problem[row["problem_id"]]
        traces += [{"problem_id": row["problem_id"], "prompt": row["prompt"], "messages": row.get("messages"),
                    "completion": text, "answer": row["answer"]} for text in dict.fromkeys(outcome["correct"])]
        if outcome["correct"] and outcome["wrong"]:
            rejected = outcome["wrong"][0]
            pairs.append({"problem_id": row["problem_id"], "source": "on_policy", "prompt": row["prompt"],
                          "messages": row.get("messages"), "chosen": outcome["correct"][0], "rejected": rejected,
                          "answer": row["answer"],
                          "rejected_answer": extract_final_answer(rejected) or ""})
    correct = sum(len(o["correct"]) for o in by_problem.values())
    return OnPolicyData(pairs, traces, len(samples), correct)
