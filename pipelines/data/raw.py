"""The raw stage: one entry point that yields problems (+ quarantine) from the configured source,
and the content snapshot of the raw-data folder that versions it.

Nothing outside the watched folder is read through it: a file or link there that resolves elsewhere is
refused before anything is opened, and the bytes ingested must be the ones the snapshot hashed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipelines.data.ingest import DEFAULT_MAX_LINE_BYTES, IngestResult, RawFileChanged, ingest_jsonl
from pipelines.data.synthetic import generate_problems
from pipelines.lineage import content_fingerprint, file_sha256
from pipelines.paths import confine
from pipelines.profiles import DataSettings

SYNTHETIC = "synthetic"
JSONL = "jsonl"
FOLDER = "folder"
SOURCES = (SYNTHETIC, JSONL, FOLDER)
QUARANTINE_COLUMNS = ("file", "line", "kind", "reason", "raw")


class PathOutsideRawFolder(ValueError):
    """A file (or link) in the watched folder resolves outside it: never read, hashed or copied."""


@dataclass(frozen=True)
class FolderSnapshot:
    """The raw files in a folder with their content hashes; its fingerprint is the folder's data version."""

    folder: str
    files: tuple[dict, ...]  # {path (absolute), name (relative), sha256, bytes}

    @property
    def fingerprint(self) -> str:
        return content_fingerprint([(f["name"], f["sha256"]) for f in self.files])


def inside_folder(path: str | Path, folder: str | Path, name: str | None = None) -> Path:
    """``path`` resolved (links followed), or :class:`PathOutsideRawFolder` naming it when it leaves
    ``folder``: a link there to ``/etc/passwd`` must not put that file into a table."""
    folder, resolved = Path(folder).resolve(), Path(path).resolve()
    if resolved.is_relative_to(folder):
        return resolved
    raise PathOutsideRawFolder(f"raw-data folder: {name or path} resolves to {resolved}, outside the folder "
                               f"{folder}; copy the file into the folder instead of linking to it")


RAW_PATTERNS = "*.jsonl,*.json,*.parquet,*.csv"  # problems files, and the user's training-data files


def snapshot_folder(folder: Path, pattern: str = RAW_PATTERNS) -> FolderSnapshot:
    """Hash every file matching ``pattern`` (comma-separated globs) under ``folder`` (none if the folder
    does not exist).

    ``path`` is the resolved file (what is read); one that resolves outside the folder is refused."""
    folder = folder.resolve()
    globs = [g.strip() for g in pattern.split(",") if g.strip()]
    found = sorted({p for g in globs for p in folder.rglob(g)}) if folder.is_dir() else []
    paths = [(p, inside_folder(p, folder)) for p in found]
    return FolderSnapshot(str(folder), tuple(
        {"path": str(resolved), "name": str(p.relative_to(folder)), "sha256": file_sha256(resolved),
         "bytes": resolved.stat().st_size} for p, resolved in paths if resolved.is_file()))


def choose_source(requested: str | None, problem_files: list[str]) -> str:
    """The configured source, or by default the raw-data folder when it holds problems files, else the
    generator (a folder holding only the user's chat data still needs problems to evaluate on)."""
    if requested is None:
        return FOLDER if problem_files else SYNTHETIC
    if requested not in SOURCES:
        raise ValueError(f"unknown raw source '{requested}', expected one of {SOURCES}")
    return requested


def source_records(result: IngestResult, source: str, paths: list[str] | None, settings: DataSettings) -> list[dict]:
    """What the raw stage read, for the lineage audit: each file with the sha256 and size of the bytes
    actually ingested (recorded during the read; the path is never hashed again, it may hold another
    file by now), its lines and kept/quarantined rows. ``lines == 0``: the file was empty."""
    if source == SYNTHETIC:
        rows = [p.as_row() for p in result.problems]
        return [{"path": f"synthetic:seed={settings.seed}", "sha256": content_fingerprint(rows),
                 "rows": len(rows), "quarantined": 0, "lines": result.lines_read,
                 "settings": {"n_problems": settings.n_problems, "max_operand": settings.max_operand}}]
    if paths is not None and len(paths) != len(result.files):
        raise ValueError(f"{len(paths)} raw files configured but the result records the read of "
                         f"{len(result.files)}: it did not come from load_raw_problems / ingest_jsonl")
    return [{"path": f.path, "sha256": f.sha256, "bytes": f.bytes, "lines": f.lines, "rows": f.kept,
             "quarantined": f.quarantined} for f in result.files]


def load_raw_problems(source: str, data: DataSettings, jsonl_paths: list[str] | None = None,
                      question_field: str = "question", answer_field: str = "answer",
                      max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                      expected: FolderSnapshot | None = None) -> IngestResult:
    """Generated problems (``synthetic``) or ingested GSM8K-format files (``jsonl``, ``folder``).

    ``expected``: the folder snapshot taken before (the step's data version). With it, a ``folder`` file
    must stay inside ``expected.folder`` and be in the snapshot, and every file the snapshot hashed must
    be read with that hash, else :class:`RawFileChanged`; every file is also checked for a change in size,
    mtime or inode during its read."""
    if source == SYNTHETIC:
        problems = generate_problems(data.n_problems, data.seed, data.max_operand, data.eval_fraction)
        return IngestResult(problems=problems, quarantined=[], lines_read=len(problems))
    if source in (JSONL, FOLDER):
        if not jsonl_paths:
            raise ValueError(f"source '{source}' needs JSONL files: set jsonl_paths (e.g. "
                             f"data/gsm8k/train.jsonl) or put *.jsonl files in the raw-data folder")
        hashed = {f["path"]: f["sha256"] for f in expected.files} if expected is not None else {}
        if source == JSONL:
            paths = [confine(p, f"jsonl_paths[{i}]") for i, p in enumerate(jsonl_paths)]
        elif expected is None:  # the folder itself is a deployment setting, not confined to the data roots
            paths = [Path(p).resolve() for p in jsonl_paths]
        else:
            paths = [inside_folder(p, expected.folder) for p in jsonl_paths]
            if missing := [str(p) for p in paths if str(p) not in hashed]:
                raise RawFileChanged(f"{', '.join(missing)} not in the raw-data folder snapshot of "
                                     f"{expected.folder}: the folder changed before it was read; retry the step")
        return ingest_jsonl(paths, question_field=question_field, answer_field=answer_field,
                            max_line_bytes=max_line_bytes, expected_sha256=hashed)
    raise ValueError(f"unknown raw source '{source}', expected one of {SOURCES}")
