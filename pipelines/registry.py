"""MLflow model registry for checkpoints: one registered model per variant, a ``champion`` alias.

A checkpoint becomes an MLflow logged model of the run that trained it, and that model a model version
(``run_id`` the training run, ``model_id`` the logged model), so the registry page leads to the loss
curves and params. The logged model is *external*: it points at the published checkpoint directory
(``checkpoint_uri``; versions are kept there for lineage) instead of copying gigabytes of weights into
the artifact store. The version's source is the logged model's artifact location, not ``models:/<id>``,
which a SQLite registry resolves through the process-global tracking URI, not this client's. Versions
are tagged with the checkpoint version (its fingerprint), so registering again is a no-op, and with
their scores on a named set of eval suites (``suites_fingerprint``), so a later candidate can be
compared on the same items, and the grader each suite's score is under (``graders``). Published models
evaluated in place of a checkpoint (``eval_<variant>.published_model``) are versions of a separate
registered model per variant (``published_model_name``), registered the same way as an external logged
model of the run that evaluated them, and named by their content (``published-<sha16>``). Every call
goes through the store lock, as in ``pipelines.tracking``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from pipelines.tracking import locked, make_client

CHAMPION = "champion"
CHECKPOINT_TAG = "checkpoint_version"
SUITES_TAG = "suites_fingerprint"
SCORES_TAG = "scores"
GRADERS_TAG = "graders"  # JSON {suite: grader} of the scores (absent on versions scored before it: all exact)
PUBLISHED_TAG = "published_model"  # a published model's reference as given (a local directory or a hub id)
SHA256_TAG = "sha256"  # a published model's content hash (model_content_version of its directory)
GATE_TAG = "gate_passed_against"  # the champion version a candidate was gated against (or "none")
CHECKPOINT_URI_TAG = "checkpoint_uri"  # file URI of the published checkpoint directory
MODEL_ID_TAG = "model_id"  # the logged model (MLflow returns versions without their model_id)
CHECKPOINT_ARTIFACT = "checkpoint"  # where versions registered before logged models copied their files
MODEL_TYPE = "transformers-checkpoint"  # a save_pretrained directory: weights, config, tokenizer


def registered_model_name(prefix: str, variant: str) -> str:
    return f"{prefix}-{variant}"


def published_model_name(prefix: str, variant: str) -> str:
    """The registered model of the published models evaluated as ``variant``, apart from its checkpoints'."""
    return f"{prefix}-published-{variant}"


PUBLISHED_PREFIX = "published-"


def published_version(sha256: str) -> str:
    """A published model's version, as ``eval_<variant>`` names it: its content hash's first 16 hex."""
    return f"{PUBLISHED_PREFIX}{sha256[:16]}"


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

    @property
    def graders(self) -> dict[str, str] | None:
        """The grader each suite's score is under (None for versions scored before graders were recorded)."""
        return json.loads(self.tags[GRADERS_TAG]) if GRADERS_TAG in self.tags else None

    @property
    def model_id(self) -> str | None:
        """The logged model behind the version (None for versions registered from a run's artifacts)."""
        return self.tags.get(MODEL_ID_TAG)


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

    def has_run(self, run_id: str) -> bool:
        """Whether this tracking store holds the (not deleted) run, e.g. a checkpoint's training run."""
        from mlflow.exceptions import MlflowException

        try:
            run = self._call(lambda: self.client.get_run(run_id))
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
        return run.info.lifecycle_stage != "deleted"

    def experiment_of(self, run_id: str) -> str:
        return self._call(lambda: self.client.get_run(run_id)).info.experiment_id

    def register(self, name: str, checkpoint_dir: Path, run_id: str, checkpoint_version: str,
                 tags: dict[str, str] | None = None, description: str | None = None,
                 model_name: str | None = None, model_description: str | None = None) -> RegisteredVersion:
        """A model version of ``checkpoint_dir`` as a logged model of run ``run_id``, or the existing one.

        ``tags`` go on the logged model and the version; ``description`` (Markdown) on the version;
        ``model_description`` on the registered model, when this creates it."""
        existing = self.find(name, checkpoint_version)
        if existing is not None:
            return existing
        if self._registered_model(name) is None:
            self._call(lambda: self.client.create_registered_model(
                name, description=model_description
                or "llm-lineage checkpoints; the 'champion' alias is the promoted one"))
        tags = {CHECKPOINT_TAG: checkpoint_version, CHECKPOINT_URI_TAG: checkpoint_dir.resolve().as_uri(),
                **(tags or {})}
        model = self._logged_model(run_id, model_name or name, tags)
        version = self._call(lambda: self.client.create_model_version(
            name, source=model.artifact_location, run_id=run_id, model_id=model.model_id,
            tags={**tags, MODEL_ID_TAG: model.model_id}, description=description))
        return _registered(version)

    def _logged_model(self, run_id: str, name: str, tags: dict[str, str]):
        """Run ``run_id``'s external logged model of this checkpoint (created once, READY)."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus
        from mlflow.models.utils import get_external_mlflow_model_spec
        from mlflow.utils.mlflow_tags import MLFLOW_MODEL_IS_EXTERNAL

        experiment_id = self.experiment_of(run_id)
        for model in self._call(lambda: self.client.search_logged_models(
                [experiment_id], filter_string=f"tags.{CHECKPOINT_TAG} = '{tags[CHECKPOINT_TAG]}'")):
            if model.source_run_id == run_id and model.name == name and model.status == LoggedModelStatus.READY:
                return model  # an earlier attempt created it, then failed before registering
        model = self._call(lambda: self.client.create_logged_model(
            experiment_id, name=name, source_run_id=run_id, tags={MLFLOW_MODEL_IS_EXTERNAL: "true", **tags},
            model_type=MODEL_TYPE))
        # The MLmodel file MLflow writes for external models: the registry needs one, the weights stay put.
        with tempfile.TemporaryDirectory(prefix="mlmodel-") as scratch:
            get_external_mlflow_model_spec(model).save(str(Path(scratch) / "MLmodel"))
            self._call(lambda: self.client.log_model_artifacts(model.model_id, scratch))
        model = self._call(lambda: self.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY))
        # listed among the run's outputs (its "Logged models"), as mlflow's own log_model does
        self._call(lambda: self.client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)]))
        return model

    def record_scores(self, version: RegisteredVersion, suites_fingerprint: str, scores: dict[str, float],
                      graders: dict[str, str] | None = None) -> RegisteredVersion:
        """Remember ``version``'s scores on the suites named by ``suites_fingerprint`` (and, when given,
        the grader each suite's score is under)."""
        tags = {SUITES_TAG: suites_fingerprint, SCORES_TAG: json.dumps(scores, sort_keys=True)}
        if graders is not None:
            tags[GRADERS_TAG] = json.dumps(graders, sort_keys=True)
        return self.set_tags(version, tags)

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

    def checkpoint_files(self, version: RegisteredVersion, scratch: Path) -> Path:
        """The version's checkpoint directory, e.g. to re-evaluate a champion on new suites: the published
        directory its logged model points at, or (versions registered by copying the files into their run)
        those files downloaded into ``scratch``."""
        uri = version.tags.get(CHECKPOINT_URI_TAG)
        if uri is None:
            scratch.mkdir(parents=True, exist_ok=True)
            return Path(self._call(lambda: self.client.download_artifacts(version.run_id, CHECKPOINT_ARTIFACT,
                                                                          str(scratch))))
        directory = Path(url2pathname(urlparse(uri).path))
        if not directory.is_dir():
            raise FileNotFoundError(f"{version.uri} points at the checkpoint directory {directory}, which is gone: "
                                    "restore it (every published version is kept for lineage), or rebuild it by "
                                    "materializing the checkpoint with the champion's inputs and config")
        return directory

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


def register_published(registry: ModelRegistry, name: str, model_ref: str, model_dir: Path, sha256: str,
                       run_id: str, variant: str, scores: dict[str, float], suites_fingerprint: str,
                       graders: dict[str, str] | None = None, tags: dict[str, str] | None = None,
                       description: str | None = None) -> RegisteredVersion:
    """A published model evaluated as ``variant`` (``eval_<variant>.published_model``), as a version of
    the registered model ``name`` (``published_model_name``), with its scores; the existing version when
    the same content was registered before (found by its ``published-<sha16>`` tag), so a changed upload
    under the same reference is a new version.

    The version is an *external* logged model of run ``run_id`` (the run that evaluated it) pointing at
    ``model_dir`` (no weights copied), tagged with ``published_model`` (``model_ref`` as given: a local
    directory or a hub id), ``sha256`` (``model_content_version(model_dir)``, not recomputed here),
    ``variant`` and ``checkpoint_version`` ``published-<sha16>``; ``tags`` (e.g. Dagster links) go with
    them. ``scores``/``graders``: pass@1 per suite and the grader of each (``gating.suite_scores``), on the
    suites named by ``suites_fingerprint``; they replace the version's earlier ones.
    """
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"published model {model_ref}: sha256 must be the 64 hex digits of model_content_version, "
                         f"got '{sha256}'")
    identity = {"variant": variant, PUBLISHED_TAG: model_ref, SHA256_TAG: sha256}
    version = registry.register(name, Path(model_dir), run_id, published_version(sha256), {**(tags or {}), **identity},
                                description, model_name=f"published_{variant}",
                                model_description=f"Published models evaluated as llm-lineage's {variant} variant, "
                                                  "one version per content (tag sha256); never promoted")
    return registry.record_scores(version, suites_fingerprint, scores, graders)


def _registered(version) -> RegisteredVersion:
    tags = version.tags or {}
    scores = json.loads(tags[SCORES_TAG]) if SCORES_TAG in tags else None
    return RegisteredVersion(version.name, str(version.version), tags.get(CHECKPOINT_TAG, ""), version.run_id,
                             tags.get(SUITES_TAG), scores, dict(tags))
