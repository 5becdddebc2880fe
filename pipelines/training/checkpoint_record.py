"""The record published with every checkpoint (``lineage.json``), and what loading reads from it.

``trust_remote_code`` is chosen once, when a base model is imported, and recorded there; every later
load of that model or of a checkpoint trained from it (training stages, evaluation, on-policy sampling)
reads the flag from the checkpoint it loads, so an opted-in model loads everywhere and nothing else
ever runs shipped code. The chat options its last stage trained with (system prompt, template kwargs,
override file and its SHA-256) are recorded too: evaluation asks the checkpoint the same way by default.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.training.chat_options import ChatOptions

LINEAGE_FILE = "lineage.json"
TRUST_REMOTE_CODE = "trust_remote_code"
CHAT_OPTIONS = "chat_options"
EVALUATION = "evaluation"  # figures measured on the weights before they were published (assets/_training.py)


def read_record(model_dir: Path | str | None) -> dict:
    """The checkpoint's lineage record ({} for a directory without one, e.g. a model outside the lineage)."""
    if model_dir is None:
        return {}
    path = Path(model_dir) / LINEAGE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def trusts_remote_code(model_dir: Path | str | None) -> bool:
    return read_record(model_dir).get(TRUST_REMOTE_CODE) is True


def recorded_chat_options(model_dir: Path | str | None) -> ChatOptions:
    """How the checkpoint was trained to be prompted (defaults for a checkpoint that records none)."""
    return ChatOptions.from_record(read_record(model_dir).get(CHAT_OPTIONS))
