"""fsspec access to object storage (``s3://bucket/prefix``): one way to open a URL, copy directories and say what
failed, shared by the checkpoint and table stores (the Dagster side) and the Ray job staging (a Ray worker, which
imports no Dagster). Endpoint and credentials come from the standard AWS variables (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, …), as every S3 client reads them."""

from __future__ import annotations

import os
from pathlib import Path

# What an S3 client reads from the environment: forwarded to processes started elsewhere (a Ray job).
AWS_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION")


class ObjectStoreUnavailable(RuntimeError):
    """The object store could not be read or written: names the URL and what to check."""


def is_object_url(root: str) -> bool:
    """``s3://…`` and other fsspec URLs; a plain path (the embedded default) is not one."""
    return "://" in root


def open_object_store(url: str):
    """``(filesystem, path)`` for ``url``, with no listing cache: another host may write between two calls of
    this one. The S3 endpoint is passed explicitly so it is part of fsspec's instance-cache key (a changed
    AWS_ENDPOINT_URL takes effect)."""
    try:
        import fsspec

        options = {"endpoint_url": os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")} \
            if url.startswith(("s3://", "s3a://")) else {}
        return fsspec.core.url_to_fs(url, use_listings_cache=False, **options)
    except ImportError as error:
        raise ObjectStoreUnavailable(f"cannot open {url}: {error} (pip install 'llm-lineage[cluster]' "
                                     "for s3fs)") from error


def unavailable(action: str, url: str, error: Exception) -> ObjectStoreUnavailable:
    return ObjectStoreUnavailable(
        f"could not {action} {url}: {type(error).__name__}: {str(error)[:300]} -- is the bucket there and "
        "are AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY right for it?")


def local_files(directory: Path) -> list[str]:
    """Every file under ``directory``, as sorted POSIX paths relative to it."""
    return sorted(p.relative_to(directory).as_posix() for p in Path(directory).rglob("*") if p.is_file())


def upload_tree(local: Path, url: str) -> list[str]:
    """Every file under the local directory ``local`` to ``url/<relative path>``; returns the relative paths."""
    fs, root = open_object_store(url)
    files = local_files(local)
    try:
        for relative in files:
            fs.put_file(str(Path(local) / relative), f"{root.rstrip('/')}/{relative}")
    except Exception as error:  # botocore, aiohttp and s3fs raise many types; all mean the same here
        raise unavailable("upload to", url, error) from error
    return files


def download_tree(url: str, local: Path) -> dict[str, int]:
    """Every object under ``url/`` into ``local`` at the same relative paths; returns {relative path: bytes}.
    Nothing under ``url`` is an error: a staged directory is never empty."""
    fs, root = open_object_store(url)
    prefix = root.rstrip("/") + "/"
    try:
        found = {key[len(prefix):]: info["size"] for key, info in fs.find(prefix, detail=True).items()}
        if not found:
            raise FileNotFoundError(f"no objects under {url}/")
        for relative in found:
            (Path(local) / relative).parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(prefix + relative, str(Path(local) / relative))
    except FileNotFoundError:
        raise
    except Exception as error:
        raise unavailable("download", url, error) from error
    return found


def remove_tree(url: str) -> None:
    """Delete every object under ``url`` (nothing there is fine)."""
    fs, root = open_object_store(url)
    try:
        if fs.find(root.rstrip("/") + "/"):
            fs.rm(root, recursive=True)
    except Exception as error:
        raise unavailable("delete", url, error) from error
