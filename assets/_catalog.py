"""What the asset catalog shows beyond each asset's code: its ``code_version`` and its owners.

``code_version`` is the version of the step code that computes it, so Dagster's UI marks an asset
stale when its code changed ("code version changed"), not only when its inputs did.

The versions are the constants the steps already bump when their output changes for the same inputs
(the training fingerprint's, the generation and grading caches'), so one bump serves both the reuse
logic and Dagster. Every asset must be listed (``tests/test_definitions.py``)."""

from assets.self_improvement import ROUNDS
from pipelines.data.self_improvement import VERIFIER_VERSION
from pipelines.data.user_data import CODE_VERSION as USER_DATA
from pipelines.evaluation.versioning import GENERATION_CODE_VERSION as GENERATION
from pipelines.evaluation.versioning import GRADING_CODE_VERSION as GRADING
from pipelines.training.job import CODE_VERSION as TRAINING

DATA = "data-v2"  # bump when a raw or dataset builder gives other rows for the same input
PROMOTION = "promotion-v1"
AUDIT = "audit-v1"

CODE_VERSIONS = {
    "raw_problems": DATA, "raw_training_data": USER_DATA, "eval_suites": DATA, "training_problems": DATA,
    "raw_corpus": DATA, "sft_dataset": DATA, "think_dataset": DATA,
    "preference_dataset": f"{DATA}+{GENERATION}+{GRADING}",  # on-policy pairs are sampled and graded
    "tokenizer": TRAINING, "base_checkpoint": TRAINING, "instruct_checkpoint": TRAINING,
    "think_sft_checkpoint": TRAINING, "reasoning_checkpoint": TRAINING,
    "eval_base": GENERATION, "eval_instruct": GENERATION, "eval_reasoning": GENERATION,
    "eval_scores": GRADING, "eval_report": GRADING, "lineage_report": AUDIT,
    "instruct_candidate": PROMOTION, "instruct_champion": PROMOTION,
    "reasoning_candidate": PROMOTION, "reasoning_champion": PROMOTION,
    # self-improvement rounds: samples are generated and verified; a checkpoint is trained, then validated by sampling
    **{f"reasoning_round_{k}_samples": f"{DATA}+{GENERATION}+{GRADING}+{VERIFIER_VERSION}" for k in range(1, ROUNDS + 1)},
    **{f"reasoning_round_{k}_checkpoint": f"{TRAINING}+{GENERATION}" for k in range(1, ROUNDS + 1)},
    **{f"eval_reasoning_round_{k}": GENERATION for k in range(ROUNDS)},
}

# Who answers for an asset, by stage (Dagster's owners: "team:" names or e-mail addresses).
OWNERS = {"raw": ["team:data"], "datasets": ["team:data"], "checkpoints": ["team:training"],
          "self_improvement": ["team:training"], "evals": ["team:evaluation"]}
