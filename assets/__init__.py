"""What exists: the lineage's Dagster assets, one module per stage (raw, datasets, checkpoints, evals)."""
