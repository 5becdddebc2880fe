"""Checkpoint directories published atomically, with every version kept for lineage.

A checkpoint is written into a staging directory, renamed into ``<name>/versions/<version>`` and only
then made current by atomically replacing the ``<name>/current`` symlink: a reader either sees the old
complete checkpoint or the new complete one, never a half-written directory.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from pydantic import Field

CURRENT = "current"


class CheckpointNotFound(FileNotFoundError):
    pass


class CheckpointStore(dg.ConfigurableResource):
    """Root directory for tokenizer and model checkpoints."""

    root: str = Field(description="Directory under which each checkpoint name keeps its versions.")

    def current(self, name: str) -> Path:
        link = Path(self.root) / name / CURRENT
        if not link.exists():
            raise CheckpointNotFound(f"checkpoint '{name}' has not been published yet (no {link}); "
                                     f"materialize the '{name}' asset first")
        return link.resolve()

    def has_current(self, name: str) -> bool:
        return (Path(self.root) / name / CURRENT).exists()

    @contextmanager
    def publish(self, name: str, version: str) -> Iterator[Path]:
        """Yield a staging dir to write into; on success it becomes the current ``name`` checkpoint."""
        base = Path(self.root) / name
        staging = base / f".staging-{version}-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        final = base / "versions" / version
        final.parent.mkdir(exist_ok=True)
        try:
            os.rename(staging, final)
        except OSError:
            if not final.is_dir():
                raise
            # Another process published this version first. Versions are fingerprints of their inputs and
            # appear only through this rename, so the existing directory is complete: keep it (a reader may
            # be inside it) and drop ours.
            shutil.rmtree(staging, ignore_errors=True)
        temporary_link = base / f".{CURRENT}-{uuid.uuid4().hex[:8]}"
        temporary_link.symlink_to(final.relative_to(base), target_is_directory=True)
        os.replace(temporary_link, base / CURRENT)
