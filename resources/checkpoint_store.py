"""Checkpoint directories published atomically, content-checked, with every version kept for lineage.

A checkpoint is written into a staging directory, given a content manifest (``content_manifest.json``:
size and SHA-256 of every file), renamed into ``<name>/versions/<version>`` and only then made current
by atomically replacing the ``<name>/current`` symlink: a reader either sees the old complete checkpoint
or the new complete one, never a half-written directory.

``current()`` verifies the directory against its manifest before handing it out, so every loader (the
next training stage, evaluation, on-policy sampling, promotion, reuse of an unchanged fingerprint) gets
a checkpoint whose files are exactly the published ones, or a ``CheckpointCorrupted`` error naming the
checkpoint, the file and the directory to delete. A directory without a manifest (published before
manifests existed) is refused the same way: its content cannot be vouched for, and rematerializing
after deleting it is cheap next to evaluating or training on silently damaged weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from pydantic import Field

CURRENT = "current"
MANIFEST_FILE = "content_manifest.json"
MANIFEST_FORMAT = 1
CHUNK_BYTES = 1 << 20
# A file whose ctime is this recent is never cached as verified: file timestamps tick coarsely (a
# jiffy), so a rewrite in the same tick as the original write would otherwise look unchanged.
RACY_WINDOW_NS = 2_000_000_000

# Per-process: absolute path -> (stat identity, sha256) of files already hashed and found intact. The
# identity includes the inode's ctime, which the kernel sets on every write and every utime() call, so
# an in-place overwrite (even one that keeps the size and restores the mtime) is hashed again.
_verified: dict[str, tuple[tuple[int, ...], str]] = {}


class CheckpointNotFound(FileNotFoundError):
    pass


class CheckpointCorrupted(RuntimeError):
    """A published checkpoint's files differ from its content manifest, or it has no manifest."""


def _identity(stat: os.stat_result) -> tuple[int, ...]:
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


def _sha256(path: Path) -> tuple[str, int]:
    """Streamed in 1 MiB chunks: (hex digest, bytes read)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _files(directory: Path) -> set[str]:
    """Every file under ``directory`` (POSIX relative paths), except the manifest itself."""
    found = set()
    for parent, _, names in os.walk(directory):
        for file_name in names:
            relative = (Path(parent) / file_name).relative_to(directory).as_posix()
            if relative != MANIFEST_FILE:
                found.add(relative)
    return found


def write_manifest(directory: Path, name: str, version: str) -> None:
    files = {}
    for relative in sorted(_files(directory)):
        digest, size = _sha256(directory / relative)
        files[relative] = {"size": size, "sha256": digest}
    manifest = {"format": MANIFEST_FORMAT, "checkpoint": name, "version": version, "files": files}
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))


def verify_checkpoint(directory: Path, name: str) -> int:
    """Raise ``CheckpointCorrupted`` unless ``directory`` holds exactly its manifest's files, byte for byte.

    Returns the bytes hashed (0 when every file matched this process's cache of verified files).
    """
    where = f"{name} version {directory.name}"
    fix = f"delete {directory} and rematerialize '{name}'"
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
        expected = manifest["files"]
        if not isinstance(expected, dict):
            raise TypeError(f"'files' is a {type(expected).__name__}")
        for relative, entry in expected.items():
            if not (isinstance(entry, dict) and isinstance(entry.get("size"), int)
                    and isinstance(entry.get("sha256"), str)):
                raise ValueError(f"entry for {relative} is not {{size, sha256}}: {entry!r}")
    except FileNotFoundError:
        raise CheckpointCorrupted(f"{where}: no {MANIFEST_FILE} (published by code without content manifests, "
                                  f"or the manifest was deleted), so its files cannot be verified; {fix}") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointCorrupted(f"{where}: {MANIFEST_FILE} unreadable ({error!r}); {fix}") from None
    present = _files(directory)
    if missing := sorted(set(expected) - present):
        raise CheckpointCorrupted(f"{where}: {', '.join(missing)} missing; {fix}")
    if extra := sorted(present - set(expected)):
        raise CheckpointCorrupted(f"{where}: {', '.join(extra)} not in the manifest (added after publishing); {fix}")
    hashed, now = 0, time.time_ns()
    for relative in sorted(expected):
        path, entry = directory / relative, expected[relative]
        stat = os.stat(path)
        if stat.st_size != entry["size"]:
            raise CheckpointCorrupted(f"{where}: {relative} size mismatch (expected {entry['size']} bytes, "
                                      f"found {stat.st_size}); {fix}")
        if _verified.get(str(path)) == (_identity(stat), entry["sha256"]):
            continue
        digest, size = _sha256(path)
        hashed += size
        if digest != entry["sha256"]:
            _verified.pop(str(path), None)
            raise CheckpointCorrupted(f"{where}: {relative} sha256 mismatch (expected {entry['sha256']}, "
                                      f"found {digest}); {fix}")
        if stat.st_ctime_ns < now - RACY_WINDOW_NS and _identity(os.stat(path)) == _identity(stat):
            _verified[str(path)] = (_identity(stat), digest)
    return hashed


class CheckpointStore(dg.ConfigurableResource):
    """Root directory, or object-storage URL (``resources/object_checkpoints.py``), for checkpoints."""

    root: str = Field(description="Directory under which each checkpoint name keeps its versions, or an "
                      "s3://bucket/prefix shared by every host (endpoint and credentials: the AWS_* variables).")
    cache_dir: str | None = Field(default=None, description="With an object-storage root: the local directory "
                                  "versions are downloaded into for loading (unused with a local root).")

    def _objects(self):
        """The object-storage implementation, or None for a local root (the default, unchanged)."""
        if "://" not in self.root:
            return None
        from resources.object_checkpoints import ObjectCheckpoints

        return ObjectCheckpoints(self.root, self.cache_dir)

    def current(self, name: str) -> Path:
        """The current version's directory, verified against its content manifest."""
        if objects := self._objects():
            return objects.current(name)
        link = Path(self.root) / name / CURRENT
        if not link.exists():
            raise CheckpointNotFound(f"checkpoint '{name}' has not been published yet (no {link}); "
                                     f"materialize the '{name}' asset first")
        directory = link.resolve()
        verify_checkpoint(directory, name)
        return directory

    def has_current(self, name: str) -> bool:
        if objects := self._objects():
            return objects.has_current(name)
        return (Path(self.root) / name / CURRENT).exists()

    def current_version(self, name: str) -> str | None:
        """The current version's name, unverified: enough to decide on reuse, never to read its files."""
        if objects := self._objects():
            return objects.current_version(name)
        link = Path(self.root) / name / CURRENT
        return link.resolve().name if link.exists() else None

    def verify_version(self, name: str, version: str) -> None:
        """Fail now if ``version`` was published before and is damaged: a new publish of that version would
        keep the existing directory (see ``publish``), so training again could not repair it."""
        if objects := self._objects():
            return objects.verify_version(name, version)
        directory = Path(self.root) / name / "versions" / version
        if directory.is_dir():
            verify_checkpoint(directory, name)

    @contextmanager
    def publish(self, name: str, version: str) -> Iterator[Path]:
        """Yield a staging dir to write into; on success it gets a manifest and becomes the current ``name``."""
        if objects := self._objects():
            with objects.publish(name, version) as staging:
                yield staging
            return
        base = Path(self.root) / name
        staging = base / f".staging-{version}-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        try:
            yield staging
            write_manifest(staging, name, version)
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
            # be inside it) and drop ours, unless its content was damaged since.
            shutil.rmtree(staging, ignore_errors=True)
            verify_checkpoint(final, name)
        temporary_link = base / f".{CURRENT}-{uuid.uuid4().hex[:8]}"
        temporary_link.symlink_to(final.relative_to(base), target_is_directory=True)
        os.replace(temporary_link, base / CURRENT)
