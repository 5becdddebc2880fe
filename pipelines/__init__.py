"""How each lineage node is computed: Dagster-free step code, plus the code location (definitions)."""
