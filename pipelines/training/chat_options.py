"""How a stage's rows meet the chat template: a system prompt, the template's kwargs, an override file.

One place for training (SFT/DPO/GRPO rows) and evaluation (the generation prompt), so a checkpoint is
asked the way it was trained. The override file is versioned by its content (SHA-256), not its path: the
same template elsewhere is the same job, an edited file is a new one. A training run refuses a file that
changed after its job was fingerprinted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pipelines.lineage import file_sha256

TEMPLATE_SUFFIXES = (".jinja", ".j2")  # what TRL's SFTConfig(chat_template_path=...) reads as a template file


@dataclass(frozen=True)
class ChatOptions:
    system_prompt: str | None = None  # prepended unless a row's conversation starts with its own
    template_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {"enable_thinking": False}
    chat_template_file: str | None = None  # a .jinja file replacing the tokenizer's template
    chat_template_sha256: str | None = None  # that file's content when the job was made

    @classmethod
    def with_template_file(cls, path: str | Path | None, **options) -> ChatOptions:
        """Options whose override file is read now, so the job's fingerprint holds its content."""
        if path is None:
            return cls(**options)
        path = Path(path)
        if path.suffix not in TEMPLATE_SUFFIXES or not path.is_file():
            raise ValueError(f"chat_template: '{path}' is not a {'/'.join(TEMPLATE_SUFFIXES)} file")
        return cls(**options, chat_template_file=str(path), chat_template_sha256=file_sha256(path))

    @classmethod
    def from_record(cls, record: dict | None) -> ChatOptions:
        """The options a lineage record (or a TrainJob JSON) holds; unknown keys are ignored."""
        record = record or {}
        return cls(system_prompt=record.get("system_prompt"), template_kwargs=dict(record.get("template_kwargs") or {}),
                   chat_template_file=record.get("chat_template_file"),
                   chat_template_sha256=record.get("chat_template_sha256"))

    @property
    def is_default(self) -> bool:
        return self == ChatOptions()

    def record(self) -> dict:
        """What is set, for lineage.json, MLflow and Dagster metadata ({} when nothing is)."""
        return {key: value for key, value in asdict(self).items() if value not in (None, {}, "")}

    def fingerprint_content(self) -> dict:
        """What changes the trained weights: the template's content, not where the file lies."""
        return {key: value for key, value in self.record().items() if key != "chat_template_file"}

    def overridden(self, system_prompt: str | None = None, template_kwargs: dict | None = None) -> ChatOptions:
        """Evaluation's overrides over the recorded options: a system prompt ("" = none), kwargs merged."""
        changes: dict[str, Any] = {}
        if system_prompt is not None:
            changes["system_prompt"] = system_prompt or None
        if template_kwargs:
            changes["template_kwargs"] = {**self.template_kwargs, **template_kwargs}
        return replace(self, **changes)

    def prompt(self, messages: list[dict]) -> list[dict]:
        """``messages`` with the system prompt first, unless the conversation brings its own."""
        if not self.system_prompt or (messages and messages[0].get("role") == "system"):
            return list(messages)
        return [{"role": "system", "content": self.system_prompt}, *messages]

    def template_text(self) -> str | None:
        """The override template, checked against the content the job was fingerprinted with."""
        if self.chat_template_file is None:
            return None
        path = Path(self.chat_template_file)
        if self.chat_template_sha256 and file_sha256(path) != self.chat_template_sha256:
            raise ValueError(f"chat template {path} changed since this job was fingerprinted "
                             f"(sha256 {self.chat_template_sha256}); materialize the asset again")
        return path.read_text(encoding="utf-8")

    def apply_template(self, tokenizer) -> None:
        """Install the override on ``tokenizer`` (DPO/GRPO have no config for it); saved with the checkpoint."""
        text = self.template_text()
        if text is not None:
            tokenizer.chat_template = text

    def generation_prompt(self, tokenizer, messages: list[dict]) -> str:
        """The text a chat model continues: system prompt, template kwargs, generation prompt."""
        return tokenizer.apply_chat_template(self.prompt(messages), add_generation_prompt=True, tokenize=False,
                                             **self.template_kwargs)
