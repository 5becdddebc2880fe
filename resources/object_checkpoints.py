"""Checkpoints in object storage (``s3://bucket/prefix`` through fsspec/s3fs): shared by hosts without a shared disk.

Layout under the root, per checkpoint name: ``<name>/versions/<version>/…`` (the files and their
``content_manifest.json``) and ``<name>/current``, an object holding the current version's name (S3 has no
symlinks). A publish builds the version in a local staging directory as on a local root, uploads its files,
then its manifest, and only then rewrites ``current``: one PUT, atomic, so a reader sees the previous complete
version or the new complete one, never a half-uploaded one (a version without a manifest is incomplete).

Training and evaluation load checkpoints with ``from_pretrained`` from a directory, so reading a version
downloads it into a local cache keyed by version (``<cache>/<name>/versions/<version>``), verified against its
manifest (size and SHA-256 of every file); a cached copy is reused while its manifest equals the remote one.
Endpoint and credentials come from the standard AWS variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, …).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipelines.object_store import ObjectStoreUnavailable, open_object_store, unavailable
from resources.checkpoint_store import (CURRENT, MANIFEST_FILE, CheckpointCorrupted, CheckpointNotFound,
                                        _files, verify_checkpoint, write_manifest)


class ObjectCheckpoints:
    """The object-storage side of ``CheckpointStore``: same operations, a local cache for the files."""

    def __init__(self, root: str, cache_dir: str | None):
        if not cache_dir:
            raise ValueError(f"checkpoint root {root} is in object storage: set cache_dir to a local directory "
                             "where versions are downloaded for loading")
        self.root, self.cache = root.rstrip("/"), Path(cache_dir)
        self.fs, self._path = open_object_store(self.root)

    def url(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def _key(self, *parts: str) -> str:
        return "/".join([self._path.rstrip("/"), *parts])

    def _failed(self, action: str, url: str, error: Exception) -> ObjectStoreUnavailable:
        return unavailable(action, url, error)

    def _read(self, *parts: str) -> bytes | None:
        """An object's bytes, None when it does not exist."""
        try:
            return self.fs.cat_file(self._key(*parts))
        except FileNotFoundError:
            return None
        except Exception as error:  # botocore, aiohttp and s3fs raise many types; all mean the same here
            raise self._failed("read", self.url(*parts), error) from error

    def current_version(self, name: str) -> str | None:
        data = self._read(name, CURRENT)
        return data.decode().strip() if data else None

    def has_current(self, name: str) -> bool:
        return self.current_version(name) is not None

    def current(self, name: str) -> Path:
        version = self.current_version(name)
        if version is None:
            raise CheckpointNotFound(f"checkpoint '{name}' has not been published yet (no {self.url(name, CURRENT)});"
                                     f" materialize the '{name}' asset first")
        return self.local_copy(name, version)

    def _manifest(self, name: str, version: str) -> bytes | None:
        return self._read(name, "versions", version, MANIFEST_FILE)

    def verify_version(self, name: str, version: str) -> None:
        """Fail if ``version`` is complete in the store (has a manifest) but its objects differ from the manifest
        in names or sizes; an upload without a manifest is incomplete, and the next publish replaces it."""
        import json

        manifest = self._manifest(name, version)
        if manifest is None:
            return
        url = self.url(name, "versions", version)
        fix = f"delete {url}/ and rematerialize '{name}'"
        try:
            expected = json.loads(manifest)["files"]
            prefix = self._key(name, "versions", version) + "/"
            found = {key[len(prefix):]: info["size"] for key, info in self.fs.find(prefix, detail=True).items()}
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointCorrupted(f"{name} version {version}: {url}/{MANIFEST_FILE} unreadable ({error!r}); "
                                      f"{fix}") from None
        except Exception as error:
            raise self._failed("list", url, error) from error
        found.pop(MANIFEST_FILE, None)
        if missing := sorted(set(expected) - set(found)):
            raise CheckpointCorrupted(f"{name} version {version}: {', '.join(missing)} missing from {url}; {fix}")
        if extra := sorted(set(found) - set(expected)):
            raise CheckpointCorrupted(f"{name} version {version}: {', '.join(extra)} in {url} but not in the "
                                      f"manifest; {fix}")
        if wrong := sorted(f for f, entry in expected.items() if found[f] != entry["size"]):
            raise CheckpointCorrupted(f"{name} version {version}: size of {', '.join(wrong)} in {url} differs "
                                      f"from the manifest; {fix}")

    def local_copy(self, name: str, version: str) -> Path:
        """The version's files in the local cache, verified; downloaded when missing or stale."""
        import json

        url = self.url(name, "versions", version)
        manifest = self._manifest(name, version)
        if manifest is None:
            raise CheckpointCorrupted(f"{name} version {version}: no {url}/{MANIFEST_FILE} (an incomplete upload or "
                                      f"a deleted version); rematerialize '{name}'")
        cached = self.cache / name / "versions" / version
        if cached.is_dir() and (cached / MANIFEST_FILE).read_bytes() == manifest:
            verify_checkpoint(cached, name)
            return cached
        download = self.cache / name / f".download-{uuid.uuid4().hex[:8]}" / version
        download.mkdir(parents=True)
        try:
            try:
                for relative in json.loads(manifest)["files"]:
                    (download / relative).parent.mkdir(parents=True, exist_ok=True)
                    self.fs.get_file(self._key(name, "versions", version, relative), str(download / relative))
            except FileNotFoundError as error:
                raise CheckpointCorrupted(f"{name} version {version}: {error} missing from {url}; delete {url}/ and "
                                          f"rematerialize '{name}'") from None
            except (ValueError, KeyError, TypeError) as error:
                raise CheckpointCorrupted(f"{name} version {version}: {url}/{MANIFEST_FILE} unreadable "
                                          f"({error!r}); delete {url}/ and rematerialize '{name}'") from None
            except Exception as error:
                raise self._failed("download", url, error) from error
            (download / MANIFEST_FILE).write_bytes(manifest)
            try:
                verify_checkpoint(download, name)
            except CheckpointCorrupted as error:
                raise CheckpointCorrupted(f"{error} -- as downloaded from {url}: delete {url}/ and rematerialize "
                                          f"'{name}'") from None
            _replace_dir(download, cached)
        finally:
            shutil.rmtree(download.parent, ignore_errors=True)
        return cached

    def _upload(self, staging: Path, name: str, version: str) -> None:
        """Every file, then the manifest: a version without its manifest is never read as complete."""
        url = self.url(name, "versions", version)
        try:
            if self.fs.find(self._key(name, "versions", version) + "/"):  # an interrupted upload's leftovers
                self.fs.rm(self._key(name, "versions", version), recursive=True)
            for relative in sorted(_files(staging)):
                self.fs.put_file(str(staging / relative), self._key(name, "versions", version, relative))
            self.fs.put_file(str(staging / MANIFEST_FILE), self._key(name, "versions", version, MANIFEST_FILE))
        except Exception as error:
            raise self._failed("upload to", url, error) from error

    def _check_bucket(self) -> None:
        """Before anything is trained: a missing bucket or an unreachable store fails the step now. (``exists``
        would answer False for an unreachable endpoint too.) Credentials scoped to a prefix may not see the bucket
        itself: then the upload is the test."""
        bucket = self._path.split("/", 1)[0]
        try:
            self.fs.info(bucket)
        except FileNotFoundError:
            raise ObjectStoreUnavailable(f"cannot publish to {self.root}: bucket '{bucket}' does not exist "
                                         f"(create it, e.g. `aws s3 mb s3://{bucket}`)") from None
        except PermissionError:
            return
        except Exception as error:
            raise self._failed("reach", self.root, error) from error

    @contextmanager
    def publish(self, name: str, version: str) -> Iterator[Path]:
        """Yield a local staging dir; on success: manifest, upload, a cached copy, and ``current`` moved last."""
        self._check_bucket()
        staging = self.cache / name / f".staging-{version}-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        try:
            yield staging
            write_manifest(staging, name, version)
            if self._manifest(name, version) is None:
                self._upload(staging, name, version)
                _replace_dir(staging, self.cache / name / "versions" / version)
            else:
                # Published by another run or host first: versions are fingerprints of their inputs, and the one
                # in the store is complete, so keep it (readers may hold it) and drop ours, unless it is damaged.
                self.verify_version(name, version)
            try:
                self.fs.pipe_file(self._key(name, CURRENT), version.encode())
            except Exception as error:
                raise self._failed("write", self.url(name, CURRENT), error) from error
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _replace_dir(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``; a stale ``target`` is renamed away first, and one that another process
    put there in the meantime is kept (same version, complete)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_dir() and (target / MANIFEST_FILE).exists() and \
            (target / MANIFEST_FILE).read_bytes() != (source / MANIFEST_FILE).read_bytes():
        stale = target.parent / f".stale-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(target, stale)
            shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass
    try:
        os.rename(source, target)
    except OSError:
        if not target.is_dir():
            raise
