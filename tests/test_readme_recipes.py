"""The README's Launchpad recipes are valid run config for the lineage as it is defined (a renamed or
mistyped field there fails here, not in a user's first run)."""

import re
import textwrap
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pipelines.definitions import PROJECT_ROOT, defs

README = Path(PROJECT_ROOT, "README.md").read_text()
BLOCKS = [textwrap.dedent(block) for block in re.findall(r"^[ ]*```yaml\n(.*?)^[ ]*```", README, re.S | re.M)]
RECIPES = [block for block in BLOCKS if block.startswith("ops:")]


def test_the_readme_has_recipes():
    assert len(RECIPES) >= 5  # the bundled-GSM8K one, extra suites, and the three "Bring your own" recipes


@pytest.mark.parametrize("recipe", RECIPES, ids=[f"recipe{i}" for i in range(len(RECIPES))])
def test_each_recipe_is_valid_run_config(recipe):
    run_config = yaml.safe_load(recipe)
    job = defs.resolve_implicit_global_asset_job_def()
    # validate_run_config checks field names and types against every asset's typed config
    dg.validate_run_config(job, run_config)
