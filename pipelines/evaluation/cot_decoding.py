"""CoT decoding (Wang & Zhou, 2024) for base models: branch on the top-K first tokens, continue each
branch greedily, and prefer the path whose *answer* tokens the model is most confident about.

A path's confidence is the mean, over the tokens of its final answer (where the answer is first
produced), of p(top-1) − p(top-2) at that step. The model needs the Hugging Face call signature (input_ids, attention_mask, position_ids,
cache, use_cache) returning ``logits`` and ``cache``; a model whose ``forward`` still names the cache
``past_key_values`` (its name before transformers 5.24, kept by remote-code models) is called that way.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass

from pipelines.evaluation.generation import truncate_at_stop
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
    """Where the final answer is first *produced*: e.g. in "3 + 4 = 7. #### 7" the first "7", because
    the copy after "####" is near-certain for every path and would hide how sure the model was."""
    segment = answer_segment(text)
    matches = list(_NUMBER.finditer(segment))
    if not matches:
        return None
    literal = matches[-1].group(0)
    for candidate in re.finditer(re.escape(literal), text):
        before = text[candidate.start() - 1] if candidate.start() else " "
        after = text[candidate.end()] if candidate.end() < len(text) else " "
        if not before.isdigit() and not after.isdigit():  # a whole number, not part of a longer one
            return candidate.start(), candidate.end()
    offset = len(text) - len(segment)
    return offset + matches[-1].start(), offset + matches[-1].end()


def cot_decode(model, tokenizer, prompt: str, top_k: int, max_new_tokens: int, stop_ids: list[int],
               stop_strings: tuple[str, ...] = ()) -> CotDecoding:
    return cot_decode_batch(model, tokenizer, [prompt], top_k, max_new_tokens, stop_ids, stop_strings)[0]


def cot_decode_batch(model, tokenizer, prompts: list[str], top_k: int, max_new_tokens: int,
                     stop_ids: list[int], stop_strings: tuple[str, ...] = ()) -> list[CotDecoding]:
    """CoT decoding for many prompts at once: B prompts × K branches continue greedily in one batch
    with a KV cache (left padding, explicit position ids). Each branch's text is cut at the first stop
    string before its answer and confidence are read."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    encoded = [tokenizer(p, add_special_tokens=False, return_tensors="pt")["input_ids"][0] for p in prompts]
    width = max(len(ids) for ids in encoded)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt_ids in enumerate(encoded):
        ids[row, width - len(prompt_ids):], mask[row, width - len(prompt_ids):] = prompt_ids, 1
    cache_name = _cache_argument(model)
    with torch.inference_mode():
        first = _step(model, ids, mask, _positions(mask), cache_name, None)
        first_probs = torch.softmax(first.logits[:, -1].float(), dim=-1)
        top = torch.topk(first_probs, top_k, dim=-1)  # [B, K]
        first_margin = [_margin(first_probs[row]) for row in range(len(prompts))]
        ids = torch.cat([ids.repeat_interleave(top_k, 0), top.indices.reshape(-1, 1)], dim=1)
        mask = torch.cat([mask.repeat_interleave(top_k, 0), torch.ones((ids.shape[0], 1), dtype=torch.long)], dim=1)
        margins = [[first_margin[row // top_k]] for row in range(ids.shape[0])]
        generated = [[int(t)] for t in top.indices.reshape(-1)]
        finished = torch.tensor([int(t) in stop_ids for t in top.indices.reshape(-1)])
        positions = _positions(mask)
        output = _step(model, ids, mask, positions, cache_name, None)
        for _ in range(max_new_tokens - 1):
            if bool(finished.all()):
                break
            probs = torch.softmax(output.logits[:, -1].float(), dim=-1)
            next_tokens = torch.where(finished, torch.full((ids.shape[0],), pad), probs.argmax(dim=-1))
            for row in range(ids.shape[0]):
                if not finished[row]:
                    margins[row].append(_margin(probs[row]))
                    generated[row].append(int(next_tokens[row]))
            finished |= torch.tensor([int(t) in stop_ids for t in next_tokens])
            mask = torch.cat([mask, torch.ones((ids.shape[0], 1), dtype=torch.long)], dim=1)
            positions = positions[:, -1:] + 1
            output = _step(model, next_tokens.unsqueeze(1), mask, positions, cache_name, getattr(output, cache_name))
    results = []
    for item in range(len(prompts)):
        branches = []
        for branch in range(top_k):
            row = item * top_k + branch
            tokens = [t for t in generated[row] if t not in stop_ids]
            branches.append(_score_branch(tokenizer, tokens, margins[row], int(top.indices[item, branch]),
                                          float(top.values[item, branch]), stop_strings))
        results.append(CotDecoding(branches))
    return results


def _positions(mask):
    return (mask.cumsum(dim=-1) - 1).clamp(min=0)


def _cache_argument(model) -> str:
    """``cache`` (transformers >= 5.24; ``past_key_values`` warns there and goes in 5.40), else the old name."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _step(model, input_ids, attention_mask, position_ids, cache_name: str, cache):
    return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                 **{cache_name: cache})


def _margin(probs) -> float:
    import torch

    top2 = torch.topk(probs, 2).values
    return float(top2[0] - top2[1])


def _score_branch(tokenizer, tokens: list[int], margins: list[float], first: int, first_prob: float,
                  stop_strings: tuple[str, ...] = ()) -> Branch:
    """Mean margin over the tokens that spell the final answer (0 when there is no answer)."""
    pieces = [tokenizer.decode(tokens[: i + 1]) for i in range(len(tokens))]
    text = truncate_at_stop(pieces[-1], stop_strings) if pieces else ""
    span = _answer_char_span(text)
    confidence = 0.0
    if span is not None:
        start, end = span
        ends = [len(p) for p in pieces]
        starts = [0] + ends[:-1]
        in_answer = [m for m, s, e in zip(margins, starts, ends) if s < end and e > start]
        confidence = sum(in_answer) / len(in_answer) if in_answer else 0.0
    return Branch(first, first_prob, text.strip(), extract_final_answer(text), confidence, len(tokens))
