"""Inputs the benchmarks share: GSM8K questions from data/gsm8k/, synthetic training rows, realistic outputs."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from pipelines.data.synthetic import DOMAIN_SHIFT_TEMPLATES, ITEMS, NAMES, TRAIN_TEMPLATES

PROJECT_ROOT = Path(__file__).resolve().parents[1]
GSM8K_DIR = PROJECT_ROOT / "data" / "gsm8k"


def gsm8k_rows(split: str) -> list[dict]:
    """GSM8K lines read in place from the repository's data/gsm8k/ (data/README.md)."""
    path = GSM8K_DIR / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"GSM8K expected at {path} (committed with the repository: data/README.md)")
    with path.open() as handle:
        return [json.loads(line) for line in handle if line.strip()]


def gsm8k_gold(answer_field: str) -> str:
    return answer_field.rsplit("####", 1)[1].strip().replace(",", "")


def template_texts(count: int, seed: int, max_operand: int, domain_shift: bool = False) -> list[str]:
    """``count`` rendered template questions; a cheap variant of ``pipelines.data.synthetic`` (no ids,
    no answer checks), which is all the decontamination benchmark needs."""
    rng = random.Random(seed)
    templates = DOMAIN_SHIFT_TEMPLATES if domain_shift else TRAIN_TEMPLATES
    texts = []
    for _ in range(count):
        template = rng.choice(templates)
        name, friend = rng.sample(NAMES, 2)
        texts.append(template.text.format(name=name, friend=friend, item=rng.choice(ITEMS),
                                          a=rng.randint(1, max_operand), b=rng.randint(1, max_operand),
                                          c=rng.randint(1, max_operand)))
    return texts


def disguise(text: str, rng: random.Random) -> str:
    """The same words with changed case, doubled whitespace and punctuation: what normalisation must undo."""
    words = text.split()
    changed = [w.upper() if rng.random() < 0.3 else w for w in words]
    changed = [w + rng.choice(["", ",", " ;", "!"]) for w in changed]
    return "  ".join(changed)


def realistic_outputs(count: int, seed: int) -> list[tuple[str, str]]:
    """(output, gold) pairs in the formats models produce: GSM8K solutions, chat answers, <think>, boxed,
    wrong numbers, no number. Built from GSM8K test answers so the numbers and lengths are realistic."""
    rng = random.Random(seed)
    rows = gsm8k_rows("test")
    pairs = []
    for index in range(count):
        row = rows[index % len(rows)]
        gold = gsm8k_gold(row["answer"])
        reasoning = re.sub(r"<<[^>]*>>", "", row["answer"].rsplit("####", 1)[0]).strip()
        answer = gold if rng.random() < 0.6 else str(int(float(gold)) + rng.randint(1, 9))
        formats = [f"{reasoning}\n#### {answer}", f"{reasoning} The answer is ${answer}.",
                   f"<think>{reasoning}</think>{answer}", f"{reasoning} So the answer is \\boxed{{{answer}}}.",
                   f"{reasoning} Final answer: {int(float(answer)):,}", "I am not sure how to solve this."]
        pairs.append((rng.choice(formats), gold))
    return pairs
