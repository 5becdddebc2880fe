"""The raw stage: one entry point that yields problems (+ quarantine) from the configured source,
and the content snapshot of the raw-data folder that versions it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pipelines.data.ingest import DEFAULT_MAX_LINE_BYTES, IngestResult, ingest_jsonl
from pipelines.data.synthetic import generate_problems
from pipelines.lineage import content_fingerprint, file_sha256
from pipelines.paths import confine
from pipelines.profiles import DataSettings

SYNTHETIC = "synthetic"
JSONL = "jsonl"
FOLDER = "folder"
SOURCES = (SYNTHETIC, JSONL, FOLDER)
QUARANTINE_COLUMNS = ("file", "line", "kind", "reason", "raw")


@dataclass(frozen=True)
class FolderSnapshot:
    """The raw files in a folder with their content hashes; its fingerprint is the folder's data version."""

    folder: str
    files: tuple[dict, ...]  # {path (absolute), name (relative), sha256, bytes}

    @property
    def fingerprint(self) -> str:
        return content_fingerprint([(f["name"], f["sha256"]) for f in self.files])


def snapshot_folder(folder: Path, pattern: str = "*.jsonl") -> FolderSnapshot:
    """Hash every file matching ``pattern`` under ``folder`` (none if the folder does not exist)."""
    folder = folder.resolve()
    paths = sorted(p for p in folder.rglob(pattern) if p.is_file()) if folder.is_dir() else []
    return FolderSnapshot(str(folder), tuple(
        {"path": str(p), "name": str(p.relative_to(folder)), "sha256": file_sha256(p), "bytes": p.stat().st_size}
        for p in paths))


def choose_source(requested: str | None, snapshot: FolderSnapshot) -> str:
    """The configured source, or by default the raw-data folder when it holds files, else the generator."""
    if requested is None:
        return FOLDER if snapshot.files else SYNTHETIC
    if requested not in SOURCES:
        raise ValueError(f"unknown raw source '{requested}', expected one of {SOURCES}")
    return requested


def source_records(result: IngestResult, source: str, paths: list[str], settings: DataSettings) -> list[dict]:
    """What the raw stage read, for the lineage audit: each file with its hash and kept/quarantined rows."""
    if source == SYNTHETIC:
        rows = [p.as_row() for p in result.problems]
        return [{"path": f"synthetic:seed={settings.seed}", "sha256": content_fingerprint(rows),
                 "rows": len(rows), "quarantined": 0,
                 "settings": {"n_problems": settings.n_problems, "max_operand": settings.max_operand}}]
    kept = Counter(p.source for p in result.problems)
    quarantined = Counter(q.file for q in result.quarantined)
    return [{"path": str(Path(p).resolve()), "sha256": file_sha256(Path(p)), "rows": kept[str(Path(p))],
             "quarantined": quarantined[str(Path(p))]} for p in paths]


def load_raw_problems(source: str, data: DataSettings, jsonl_paths: list[str] | None = None,
                      question_field: str = "question", answer_field: str = "answer",
                      max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> IngestResult:
    """Generated problems (``synthetic``) or ingested GSM8K-format files (``jsonl``)."""
    if source == SYNTHETIC:
        problems = generate_problems(data.n_problems, data.seed, data.max_operand, data.eval_fraction)
        return IngestResult(problems=problems, quarantined=[], lines_read=len(problems))
    if source in (JSONL, FOLDER):
        if not jsonl_paths:
            raise ValueError(f"source '{source}' needs JSONL files: set jsonl_paths (e.g. "
                             f"../shared/datasets/gsm8k/train.jsonl) or put *.jsonl files in the raw-data folder")
        paths = [confine(p, f"jsonl_paths[{i}]") if source == JSONL else Path(p)  # folder: a deployment setting
                 for i, p in enumerate(jsonl_paths)]
        return ingest_jsonl(paths, question_field=question_field, answer_field=answer_field,
                            max_line_bytes=max_line_bytes)
    raise ValueError(f"unknown raw source '{source}', expected one of {SOURCES}")
