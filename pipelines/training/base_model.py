"""An imported base model ("bring your own"): where its files are, and a version that is their content.

A path string is not a version: weights replaced in place under the same directory were silently reused.
The version here hashes every file ``from_pretrained`` reads from the directory (weights, configs,
tokenizer files, chat template, remote code), streamed in chunks. A Hub id is resolved to its snapshot in
the local Hugging Face cache (the lineage runs offline), so id and directory name the same files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipelines.lineage import file_sha256
from pipelines.paths import confine, looks_like_local_path

FIELD = "base_model"


class BaseModelNotFound(FileNotFoundError):
    pass


def resolve_base_model(reference: str, cache_dir: str | Path | None = None, field: str = FIELD) -> Path:
    """The directory that ``reference`` (a local directory or a cached Hub id) names, or a clear error
    naming the config ``field`` it came from."""
    if looks_like_local_path(reference):
        path = confine(reference, field)
        if not path.is_dir():
            raise BaseModelNotFound(f"{field}: no such directory: {path} (configured as '{reference}')")
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(reference, local_files_only=True, cache_dir=cache_dir))
    except (LocalEntryNotFoundError, HFValidationError, OSError) as error:
        raise BaseModelNotFound(
            f"{field}: '{reference}' is neither a directory (no such directory: {confine(reference, field)}) "
            f"nor a model in the local Hugging Face cache: download it first (`hf download {reference}`), "
            f"or give the directory's path") from error


def model_files(directory: Path) -> list[Path]:
    """The files a model directory is made of: every regular top-level file (symlinks into the HF cache's
    blobs followed), hidden ones excepted. Subfolders (e.g. Meta's ``original/``) are not loaded."""
    return sorted(p for p in Path(directory).iterdir() if not p.name.startswith(".") and p.is_file())


def model_content_version(directory: Path) -> str:
    """sha256 over (name, size, sha256 of content) of every model file: equal iff the files are equal."""
    digest = hashlib.sha256()
    files = model_files(directory)
    if not files:
        raise BaseModelNotFound(f"{FIELD}: {directory} holds no model files")
    for path in files:
        digest.update(f"{path.name}\0{path.stat().st_size}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()
