"""Every asset ends with ``recorded(...)``: the lineage facts Dagster does not record itself, as metadata.

Dagster already stamps each materialization with the exact upstream events its step consumed
(``dagster/input_event_pointer/<asset>``, ``dagster/input_data_version/<asset>``: the latest event of
each upstream, ``deps=`` ones included, taken when the step starts), its code and data versions and the
run id; ``pipelines/lineage.py`` follows those. Added here: git commit, config hash, project version,
the files / models / hub datasets a step read (``sources``) and, as ``lineage/inputs``, versions a step
read itself: the raw stage hashes the folder it reads (``raw_data_files`` is an observable source, so
Dagster's tag names its last observation *before* the step, possibly none), and a check-gated table
is read at the version it holds when read (``assets/_tables.py``), which a run finishing meanwhile
may have moved past the step-start version.
"""

import json

import dagster as dg

from pipelines.lineage import (CONFIG_HASH, GIT_COMMIT, PROJECT_VERSION, READ_VERSIONS, SOURCES, content_fingerprint,
                               git_commit, project_version)


def _plain(value):
    return getattr(value, "value", value)


def recorded(result: dg.MaterializeResult, config: dg.Config | None = None,
             inputs: dict[str, str] | None = None, sources: list[dict] | None = None) -> dg.MaterializeResult:
    metadata = dict(result.metadata or {})
    data_version = result.data_version.value if result.data_version else content_fingerprint(
        {k: str(_plain(v)) for k, v in metadata.items()})
    metadata |= {GIT_COMMIT: git_commit(), PROJECT_VERSION: project_version(),
                 CONFIG_HASH: content_fingerprint(config.model_dump() if config is not None else {})}
    if inputs:
        metadata[READ_VERSIONS] = dg.MetadataValue.json(inputs)
    if sources:
        metadata[SOURCES] = dg.MetadataValue.json(sources)
    return dg.MaterializeResult(data_version=dg.DataVersion(data_version), metadata=metadata,
                                check_results=result.check_results, tags=result.tags)


def rows_version(rows: list[dict]) -> str:
    """Data version of a table: its content, so an identical rebuild keeps the same version."""
    return content_fingerprint(sorted(json.dumps(r, sort_keys=True, default=str) for r in rows))
