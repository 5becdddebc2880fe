"""Content fingerprints of evaluation outputs, so unchanged inputs never regenerate or re-grade.

A generation set is determined by the checkpoint version, the suite items, the decoding config and the
evaluation code; scores by the generation sets they grade and the grading code. Bump the code versions
when generation or grading changes what it produces for the same inputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

GENERATION_CODE_VERSION = "generation-v4"  # v3: fast_decode.py (own RNG stream); v4: its final-layer prefill (last bits)
GRADING_CODE_VERSION = "grading-v3"  # v3: final-answer region; strict/flexible exactly lm-eval; maj@k by verdict


def _digest(content) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def suites_fingerprint(suite_rows: Iterable[dict]) -> str:
    """Identifies the eval items (not their order): equal fingerprints mean comparable scores. An item's
    suite system prompt changes its prompt, so it counts, but only where set: items without one (every
    suite before the column existed) keep their fingerprint, and so their stored generations."""
    return _digest(sorted(_item(r) for r in suite_rows))


def _item(row: dict) -> tuple:
    item = (row["suite"], row["problem_id"], row["question"], str(row["answer"]))
    return item + ("system_prompt", row["system_prompt"]) if row.get("system_prompt") else item


def generation_fingerprint(variant: str, model_version: str, suites: str, decoding: str,
                           chat_options: dict | None = None) -> str:
    """``chat_options`` (system prompt, template kwargs) only when set: unset, earlier versions stand."""
    parts = [variant, model_version, suites, decoding, GENERATION_CODE_VERSION]
    return _digest(parts + [chat_options] if chat_options else parts)


def scores_fingerprint(generation_fingerprints: Iterable[str]) -> str:
    return _digest([sorted(set(generation_fingerprints)), GRADING_CODE_VERSION])
