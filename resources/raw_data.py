"""The raw-data folder the lineage watches: drop GSM8K-format JSONL files in it to train on them."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from pipelines.data.raw import FolderSnapshot, snapshot_folder


class RawDataFolder(dg.ConfigurableResource):
    """Its content hash is the raw data's version: the sensor and the raw stage both read it here.

    A deployment setting like the lineage home (not a Launchpad field), so it is not confined to the
    data roots; file paths given in run config are. What is in it is confined to it: a file or link
    that resolves outside the folder fails the snapshot (``PathOutsideRawFolder``) before it is read."""

    path: str = Field(description="Folder of raw JSONL files (a file name containing 'test' is held out).")
    pattern: str = Field(default="*.jsonl", description="Which files under the folder count as raw data.")

    def snapshot(self) -> FolderSnapshot:
        return snapshot_folder(Path(self.path), self.pattern)
