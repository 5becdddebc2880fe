"""The active profile (tiny, smoke, …) as a resource, so tests and users switch it in one place."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from pipelines.profiles import PROFILES, Profile


class LineageProfile(dg.ConfigurableResource):
    """Selects the default sizes of data, model, training and evaluation; asset configs override them."""

    name: str = Field(default="tiny", description=f"One of: {', '.join(PROFILES)}.")

    def settings(self) -> Profile:
        if self.name not in PROFILES:
            raise ValueError(f"unknown profile '{self.name}'; choose one of {sorted(PROFILES)} "
                             "(set LLM_LINEAGE_PROFILE)")
        return PROFILES[self.name]
