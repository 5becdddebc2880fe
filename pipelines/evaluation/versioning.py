"""Content fingerprints of evaluation outputs, so unchanged inputs never regenerate or re-grade.

A generation set is determined by the checkpoint version, the suite items, the decoding config and the
evaluation code; scores by the generation sets they grade and the grading code. Bump the code versions
when generation or grading changes what it produces for the same inputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

GENERATION_CODE_VERSION = "generation-v5"  # v3: fast_decode.py (own RNG stream); v4: its final-layer prefill; v5: on the public forward + StaticCache
GRADING_CODE_VERSION = "grading-v3"  # v3: final-answer region; strict/flexible exactly lm-eval; maj@k by verdict


def _digest(content) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def suites_fingerprint(suite_rows: Iterable[dict], prompts_only: bool = False) -> str:
    """Identifies the eval items (not their order): equal fingerprints mean comparable scores. An item's
    suite system prompt (its prompt) and relative tolerance (its grades) count, but only where set: items
    without them (every suite before those columns existed) keep their fingerprint, and so their stored
    generations. ``prompts_only`` leaves the tolerance out, for a generation fingerprint: a new tolerance
    then re-grades (``scores_fingerprint(..., tolerances)``) without regenerating."""
    return _digest(sorted(_item(r, prompts_only) for r in suite_rows))


def _item(row: dict, prompts_only: bool) -> tuple:
    item = (row["suite"], row["problem_id"], row["question"], str(row["answer"]))
    if row.get("system_prompt"):
        item += ("system_prompt", row["system_prompt"])
    if not prompts_only and row.get("rel_tol") is not None and row["rel_tol"] == row["rel_tol"]:  # NaN: NULL
        item += ("rel_tol", float(row["rel_tol"]))
    return item


def generation_fingerprint(variant: str, model_version: str, suites: str, decoding: str,
                           chat_options: dict | None = None) -> str:
    """``chat_options`` (system prompt, template kwargs) only when set: unset, earlier versions stand."""
    parts = [variant, model_version, suites, decoding, GENERATION_CODE_VERSION]
    return _digest(parts + [chat_options] if chat_options else parts)


def scores_fingerprint(generation_fingerprints: Iterable[str],
                       tolerances: dict[tuple[str, str], float] | None = None) -> str:
    """``tolerances`` (``graders.item_tolerances``) only when any is set: unset, earlier versions stand."""
    parts = [sorted(set(generation_fingerprints)), GRADING_CODE_VERSION]
    return _digest(parts + [sorted([*key, value] for key, value in tolerances.items())] if tolerances else parts)
