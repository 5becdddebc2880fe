"""MLflow model registry for checkpoints: one registered model per variant, a ``champion`` alias.

A checkpoint becomes a model version whose source is a ``runs:/`` URI (tracking servers refuse local
paths), tagged with the checkpoint version (its fingerprint) so registering again is a no-op, and with
its scores on a named set of eval suites (``suites_fingerprint``) so a later candidate can be compared
on the same items. Every call goes through the store lock, as in ``pipelines.tracking``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipelines.tracking import locked, make_client

CHAMPION = "champion"
CHECKPOINT_TAG = "checkpoint_version"
SUITES_TAG = "suites_fingerprint"
SCORES_TAG = "scores"
GATE_TAG = "gate_passed_against"  # the champion version a candidate was gated against (or "none")
CHECKPOINT_ARTIFACT = "checkpoint"


def registered_model_name(prefix: str, variant: str) -> str:
    return f"{prefix}-{variant}"


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    checkpoint_version: str
    run_id: str | None
    suites_fingerprint: str | None
    scores: dict[str, float] | None
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


class ModelRegistry:
    def __init__(self, tracking_uri: str):
        self.tracking_uri = tracking_uri
        self.client = make_client(tracking_uri)

    def _call(self, call):
        return locked(self.tracking_uri, call)

    def find(self, name: str, checkpoint_version: str) -> RegisteredVersion | None:
        versions = self._call(lambda: self.client.search_model_versions(  # none for an unknown model
            f"name = '{name}' and tags.{CHECKPOINT_TAG} = '{checkpoint_version}'"))
        return _registered(versions[0]) if versions else None

    def register(self, name: str, checkpoint_dir: Path, run_id: str, checkpoint_version: str,
                 tags: dict[str, str] | None = None) -> RegisteredVersion:
        """A model version for ``checkpoint_dir`` (logged into run ``run_id``), or the existing one."""
        existing = self.find(name, checkpoint_version)
        if existing is not None:
            return existing
        if self._registered_model(name) is None:
            self._call(lambda: self.client.create_registered_model(
                name, description="llm-lineage checkpoints; the 'champion' alias is the promoted one"))
        self._call(lambda: self.client.log_artifacts(run_id, str(checkpoint_dir), CHECKPOINT_ARTIFACT))
        version = self._call(lambda: self.client.create_model_version(
            name, source=f"runs:/{run_id}/{CHECKPOINT_ARTIFACT}", run_id=run_id,
            tags={CHECKPOINT_TAG: checkpoint_version, **(tags or {})}))
        return _registered(version)

    def record_scores(self, version: RegisteredVersion, suites_fingerprint: str,
                      scores: dict[str, float]) -> RegisteredVersion:
        """Remember ``version``'s scores on the suites named by ``suites_fingerprint``."""
        return self.set_tags(version, {SUITES_TAG: suites_fingerprint, SCORES_TAG: json.dumps(scores, sort_keys=True)})

    def set_tags(self, version: RegisteredVersion, tags: dict[str, str]) -> RegisteredVersion:
        for key, value in tags.items():
            self._call(lambda: self.client.set_model_version_tag(version.name, version.version, key, value))
        return _registered(self._call(lambda: self.client.get_model_version(version.name, version.version)))

    def champion(self, name: str) -> RegisteredVersion | None:
        model = self._registered_model(name)
        if model is None or CHAMPION not in (model.aliases or {}):
            return None
        return _registered(self._call(lambda: self.client.get_model_version_by_alias(name, CHAMPION)))

    def promote(self, version: RegisteredVersion) -> None:
        self._call(lambda: self.client.set_registered_model_alias(version.name, CHAMPION, version.version))

    def download(self, version: RegisteredVersion, destination: Path) -> Path:
        """The version's checkpoint files, e.g. to re-evaluate a champion on new suites."""
        destination.mkdir(parents=True, exist_ok=True)
        return Path(self._call(lambda: self.client.download_artifacts(version.run_id, CHECKPOINT_ARTIFACT,
                                                                      str(destination))))

    def _registered_model(self, name: str):
        """The registered model, or None. One lookup: searching registered models is the slowest
        registry call."""
        from mlflow.exceptions import MlflowException

        try:
            return self._call(lambda: self.client.get_registered_model(name))
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise


def _registered(version) -> RegisteredVersion:
    tags = version.tags or {}
    scores = json.loads(tags[SCORES_TAG]) if SCORES_TAG in tags else None
    return RegisteredVersion(version.name, str(version.version), tags.get(CHECKPOINT_TAG, ""), version.run_id,
                             tags.get(SUITES_TAG), scores, dict(tags))
