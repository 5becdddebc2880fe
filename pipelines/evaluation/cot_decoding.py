"""CoT decoding (Wang & Zhou, 2024) for base models: branch on the top-K first tokens, continue each
branch greedily, and prefer the path whose *answer* tokens the model is most confident about.

A path's confidence is the mean, over the tokens of its final answer, of p(top-1) − p(top-2) at that
step. The model only needs ``model(input_ids=…, attention_mask=…).logits``; branches run as one batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.evaluation.grading import answer_segment, extract_final_answer, _NUMBER


@dataclass(frozen=True)
class Branch:
    first_token: int
    first_token_prob: float
    text: str
    answer: str | None
    confidence: float
    output_tokens: int


@dataclass(frozen=True)
class CotDecoding:
    branches: list[Branch]  # in first-token probability order

    @property
    def selected(self) -> Branch:
        return max(self.branches, key=lambda b: b.confidence)

    @property
    def greedy(self) -> Branch:
        return self.branches[0]


def _answer_char_span(text: str) -> tuple[int, int] | None:
    segment = answer_segment(text)
    matches = list(_NUMBER.finditer(segment))
    if not matches:
        return None
    offset = len(text) - len(segment)
    return offset + matches[-1].start(), offset + matches[-1].end()


def cot_decode(model, tokenizer, prompt: str, top_k: int, max_new_tokens: int, stop_ids: list[int]) -> CotDecoding:
    import torch

    prompt_ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        first_probs = torch.softmax(model(input_ids=prompt_ids).logits[0, -1].float(), dim=-1)
        top = torch.topk(first_probs, top_k)
        sequences = torch.cat([prompt_ids.repeat(top_k, 1), top.indices.unsqueeze(1)], dim=1)
        margins: list[list[float]] = [[float(_margin(first_probs))] for _ in range(top_k)]
        finished = torch.tensor([int(t) in stop_ids for t in top.indices])
        for _ in range(max_new_tokens - 1):
            if bool(finished.all()):
                break
            probs = torch.softmax(model(input_ids=sequences).logits[:, -1].float(), dim=-1)
            next_tokens = probs.argmax(dim=-1)
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
            next_tokens = torch.where(finished, torch.full_like(next_tokens, pad), next_tokens)
            for row in range(top_k):
                if not finished[row]:
                    margins[row].append(float(_margin(probs[row])))
            sequences = torch.cat([sequences, next_tokens.unsqueeze(1)], dim=1)
            finished |= torch.tensor([int(t) in stop_ids for t in next_tokens])
    branches = []
    for row in range(top_k):
        generated = [int(t) for t in sequences[row, prompt_ids.shape[1]:]][: len(margins[row])]
        generated = [t for t in generated if t not in stop_ids]
        branches.append(_score_branch(tokenizer, generated, margins[row], int(top.indices[row]),
                                      float(top.values[row])))
    return CotDecoding(branches)


def _margin(probs) -> float:
    import torch

    top2 = torch.topk(probs, 2).values
    return float(top2[0] - top2[1])


def _score_branch(tokenizer, tokens: list[int], margins: list[float], first: int, first_prob: float) -> Branch:
    """Mean margin over the tokens that spell the final answer (0 when there is no answer)."""
    pieces = [tokenizer.decode(tokens[: i + 1]) for i in range(len(tokens))]
    text = pieces[-1] if pieces else ""
    span = _answer_char_span(text)
    confidence = 0.0
    if span is not None:
        start, end = span
        ends = [len(p) for p in pieces]
        starts = [0] + ends[:-1]
        in_answer = [m for m, s, e in zip(margins, starts, ends) if s < end and e > start]
        confidence = sum(in_answer) / len(in_answer) if in_answer else 0.0
    return Branch(first, first_prob, text.strip(), extract_final_answer(text), confidence, len(tokens))
