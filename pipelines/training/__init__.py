"""Training recipes: tokenizer, tiny base model, SFT and DPO with TRL. Importable without Dagster."""
