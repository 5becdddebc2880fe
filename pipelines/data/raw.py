"""The raw stage: one entry point that yields problems (+ quarantine) from the configured source."""

from __future__ import annotations

from pipelines.data.ingest import DEFAULT_MAX_LINE_BYTES, IngestResult, ingest_jsonl
from pipelines.data.synthetic import generate_problems
from pipelines.paths import confine
from pipelines.profiles import DataSettings

SYNTHETIC = "synthetic"
JSONL = "jsonl"
QUARANTINE_COLUMNS = ("file", "line", "kind", "reason", "raw")


def load_raw_problems(source: str, data: DataSettings, jsonl_paths: list[str] | None = None,
                      question_field: str = "question", answer_field: str = "answer",
                      max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> IngestResult:
    """Generated problems (``synthetic``) or ingested GSM8K-format files (``jsonl``)."""
    if source == SYNTHETIC:
        problems = generate_problems(data.n_problems, data.seed, data.max_operand, data.eval_fraction)
        return IngestResult(problems=problems, quarantined=[], lines_read=len(problems))
    if source == JSONL:
        if not jsonl_paths:
            raise ValueError("source 'jsonl' needs jsonl_paths (e.g. ../shared/datasets/gsm8k/train.jsonl)")
        paths = [confine(p, f"jsonl_paths[{i}]") for i, p in enumerate(jsonl_paths)]
        return ingest_jsonl(paths, question_field=question_field,
                            answer_field=answer_field, max_line_bytes=max_line_bytes)
    raise ValueError(f"unknown raw source '{source}', expected '{SYNTHETIC}' or '{JSONL}'")
