"""Text formats shared by dataset building, training and evaluation (one place, so they cannot drift)."""

import json

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
FINAL_ANSWER_MARK = "####"


def corpus_document(question: str, solution: str, answer: str) -> str:
    """Pretraining text: GSM8K-like, so a base model can continue a question with a worked solution."""
    return f"Question: {question}\nAnswer: {solution} {FINAL_ANSWER_MARK} {answer}"


def base_prompt(question: str) -> str:
    """How a base (non-chat) model is asked: the corpus format up to the answer."""
    return f"Question: {question}\nAnswer:"


def think_completion(solution: str, answer: str) -> str:
    """Reasoning target: deliberate inside <think>…</think>, then state the answer."""
    return f"{THINK_OPEN}{solution}{THINK_CLOSE}{answer}"


def user_messages(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


def assistant_messages(content: str) -> list[dict]:
    return [{"role": "assistant", "content": content}]


def prompt_messages(row: dict) -> list[dict]:
    """The conversation a training row's completion answers: its ``messages`` (JSON: system prompt and
    earlier turns, as a user's conversational data brings them) or else one user turn with ``prompt``."""
    context = row.get("messages")
    return json.loads(context) if context else user_messages(row["prompt"])
