"""Configured paths stay inside the data roots: a Launchpad field cannot read ``/etc`` or ``../../``.

Roots: the lineage home (``LLM_LINEAGE_HOME``, default ``./var``), the repository (its ``data/`` holds
the bundled datasets: GSM8K, MATH-500), and any directories listed in ``LLM_LINEAGE_DATA_ROOTS``
(``os.pathsep``-separated); nothing beside the repository is a root unless listed there. Relative paths
are taken from the repository root (the code location's working directory), and symlinks are resolved
before the check.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOTS_ENV = "LLM_LINEAGE_DATA_ROOTS"


class PathOutsideDataRoots(ValueError):
    pass


def data_roots() -> list[Path]:
    home = Path(os.environ.get("LLM_LINEAGE_HOME", PROJECT_ROOT / "var"))
    extra = [Path(p) for p in os.environ.get(DATA_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    return [root.resolve() for root in (home, PROJECT_ROOT, *extra)]


def confine(path: str | Path, field: str, roots: list[Path] | None = None) -> Path:
    """``path`` resolved, or a clear error naming the config ``field`` when it leaves every root."""
    roots = data_roots() if roots is None else [Path(r).resolve() for r in roots]
    candidate = Path(path).expanduser()
    resolved = (candidate if candidate.is_absolute() else PROJECT_ROOT / candidate).resolve()
    if any(resolved == root or resolved.is_relative_to(root) for root in roots):
        return resolved
    allowed = ", ".join(str(root) for root in roots)
    raise PathOutsideDataRoots(f"{field}: '{path}' resolves to {resolved}, outside the data roots ({allowed}); "
                               f"move the file under one of them or add its directory to {DATA_ROOTS_ENV}")


def looks_like_local_path(reference: str) -> bool:
    """A model reference that names a directory (``./m``, ``/abs``, ``~/m``, ``a/b/c``, an existing path),
    not a Hub id (``org/name``)."""
    if reference.startswith((".", "/", "~")) or reference.count("/") > 1:
        return True
    return (PROJECT_ROOT / reference).exists()
