"""Runtime plumbing around stock Dagster (run reaping), apart from the domain steps in ``pipelines/``."""
