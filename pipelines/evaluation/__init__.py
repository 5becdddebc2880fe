"""Evaluation: prompting per variant, batched generation, grading, comparison reports."""
