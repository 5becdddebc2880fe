"""A training job as plain data: what the launcher writes to a JSON file and ``train.py`` executes.

The same file drives a standalone run (``python -m pipelines.training.train --job job.json``), a
Dagster Pipes subprocess, and ``accelerate launch`` with N processes. Its fingerprint (everything
that changes the result: recipe, inputs, settings, code version) names the resumable work directory
and versions the checkpoint, so an unchanged job is never trained twice.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from pipelines.lineage import file_sha256
from pipelines.training.chat_options import ChatOptions
from pipelines.training.model import ModelShape
from pipelines.training.recipes import TrainSettings

CODE_VERSION = "training-v3"  # bump when a recipe changes what it produces for the same inputs (v3: GRPO reward reads the final-answer region)
RECIPES = ("pretrain", "sft", "dpo", "grpo")
# Pipes custom messages from a training subprocess to the step process that launched it.
SUMMARY_MESSAGE = "summary"  # the final TrainingSummary, as a dict
METRIC_POINTS_MESSAGE = "metric_points"  # a batch of [key, step, value] for the step's MLflow run


@dataclass(frozen=True)
class LoraSettings:
    """peft LoRA; ``merge=True`` publishes merged full weights, ``False`` an adapter-only directory."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    merge: bool = True


@dataclass(frozen=True)
class GrpoSettings:
    num_generations: int = 4
    max_completion_length: int = 48
    temperature: float = 1.0


@dataclass
class TrainJob:
    recipe: str
    data_file: str
    settings: TrainSettings
    output_dir: str = ""
    work_dir: str = ""
    model_dir: str | None = None
    tokenizer_dir: str | None = None
    model_shape: ModelShape | None = None
    beta: float = 0.1
    save_steps: int = 0
    assistant_only_loss: bool = False
    lora: LoraSettings | None = None
    grpo: GrpoSettings | None = None
    trust_remote_code: bool = False
    chat: ChatOptions | None = None  # system prompt, template kwargs, template override (chat recipes)
    # How it is launched changes the weights too: the world size multiplies the global batch and shards
    # the data; the device picks the precision (bf16 on a GPU, fp32 on CPU). Set by the launcher.
    num_processes: int = 1
    device: str = "cpu"
    mlflow_tracking_uri: str | None = None
    mlflow_run_id: str | None = None
    metric_prefix: str = ""
    input_versions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe '{self.recipe}', expected one of {RECIPES}")

    @property
    def stage_name(self) -> str:
        return self.metric_prefix.rstrip("/") or self.recipe

    def validate_runnable(self) -> None:
        """Checked at launch: chained stages only learn their model_dir when the previous one finishes."""
        if self.recipe == "pretrain" and (self.tokenizer_dir is None or self.model_shape is None):
            raise ValueError("pretraining from scratch needs tokenizer_dir and model_shape")
        if self.recipe != "pretrain" and self.model_dir is None:
            raise ValueError(f"recipe '{self.recipe}' needs a model_dir to start from")
        if not self.output_dir:
            raise ValueError("a training job needs an output_dir")
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size != self.num_processes:  # its fingerprint would name another checkpoint than it trains
            raise ValueError(f"the job says num_processes={self.num_processes} (part of its fingerprint) but "
                             f"runs with {world_size} processes: launch it with --num_processes "
                             f"{self.num_processes} or rewrite the job")

    def fingerprint(self) -> str:
        """Hash of what determines the trained weights (not where they are written or logged)."""
        volatile = {"output_dir", "work_dir", "mlflow_tracking_uri", "mlflow_run_id", "model_dir", "tokenizer_dir"}
        content = {k: v for k, v in asdict(self).items() if k not in volatile | {"chat"}}
        if self.chat is not None and not self.chat.is_default:  # absent otherwise: older jobs keep their version
            content["chat"] = self.chat.fingerprint_content()
        content["code_version"] = CODE_VERSION
        content["data_sha256"] = file_sha256(Path(self.data_file))
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self), indent=2, default=list))
        return path

    @classmethod
    def load(cls, path: Path) -> TrainJob:
        raw = json.loads(Path(path).read_text())
        nested = {"settings": TrainSettings, "model_shape": ModelShape, "lora": LoraSettings, "grpo": GrpoSettings,
                  "chat": ChatOptions}
        for key, kind in nested.items():
            if raw.get(key) is not None:
                values = {f.name: raw[key][f.name] for f in fields(kind) if f.name in raw[key]}
                if "target_modules" in values:
                    values["target_modules"] = tuple(values["target_modules"])
                raw[key] = kind(**values)
        return cls(**raw)




def write_rows(rows: list[dict], path: Path) -> Path:
    """Training data handed to the subprocess as JSONL (it never opens the DuckDB file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row, default=str) + "\n")
    return path


def read_rows(path: Path) -> list[dict]:
    with Path(path).open() as handle:
        return [json.loads(line) for line in handle if line.strip()]
