"""The raw-data folder the lineage watches: drop GSM8K-format problems (JSONL) or your own training data
(conversations, reasoning traces, preference pairs: JSONL, JSON, parquet, CSV) in it to train on them."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from pipelines.data.raw import RAW_PATTERNS, FolderSnapshot, snapshot_folder


class RawDataFolder(dg.ConfigurableResource):
    """Its content hash is the raw data's version: the sensor and the raw stage both read it here.

    A deployment setting like the lineage home (not a Launchpad field), so it is not confined to the
    data roots; file paths given in run config are. What is in it is confined to it: a file or link
    that resolves outside the folder fails the snapshot (``PathOutsideRawFolder``) before it is read."""

    path: str = Field(description="Folder of raw files (a problems file whose name contains 'test' is held out).")
    pattern: str = Field(default=RAW_PATTERNS, description="Which files under the folder count as raw data "
                         "(comma-separated globs).")

    def snapshot(self) -> FolderSnapshot:
        return snapshot_folder(Path(self.path), self.pattern)
