"""The P1 baseline: a plain TRL script, what one would write without the lineage around it.

Same corpus file, tokenizer, model shape and initialisation, and the same trainer settings as the
lineage's pretraining stage (step count, batch, learning rate, schedule, max length, seed); no
Dagster, no MLflow, no resumable checkpoints, one ``save_pretrained`` at the end.

    python -m benchmarks.plain_trl_pretrain --job job.json   (a TrainJob file, only its data is read)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    args = parser.parse_args(argv)
    spec = json.loads(args.job.read_text())
    settings, shape = spec["settings"], spec["model_shape"]

    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM
    from trl import SFTConfig, SFTTrainer

    with open(spec["data_file"]) as handle:
        texts = [json.loads(line)["text"] for line in handle if line.strip()]
    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer_dir"])
    torch.manual_seed(settings["seed"])
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=shape["hidden_size"],
                         intermediate_size=shape["intermediate_size"], num_hidden_layers=shape["num_layers"],
                         num_attention_heads=shape["num_heads"], num_key_value_heads=shape["num_kv_heads"],
                         head_dim=shape["head_dim"] or shape["hidden_size"] // shape["num_heads"],
                         max_position_embeddings=shape["max_positions"], tie_word_embeddings=True,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    config._attn_implementation = "sdpa"
    model = Qwen3ForCausalLM(config)
    training_args = SFTConfig(
        output_dir=str(args.output / "trainer"), max_steps=settings["max_steps"],
        per_device_train_batch_size=settings["batch_size"], learning_rate=settings["learning_rate"],
        lr_scheduler_type="cosine", warmup_steps=settings["warmup_ratio"], logging_steps=settings["logging_steps"],
        gradient_accumulation_steps=settings["gradient_accumulation_steps"], report_to="none",
        seed=settings["seed"], data_seed=settings["seed"], save_strategy="no", use_cpu=True, disable_tqdm=True,
        dataloader_num_workers=0, max_length=settings["max_length"], dataset_text_field="text",
        eos_token="<|endoftext|>", packing=settings["packing"], packing_strategy="wrapped")
    trainer = SFTTrainer(model=model, args=training_args, processing_class=tokenizer,
                         train_dataset=Dataset.from_dict({"text": texts}))
    trainer.train()
    trainer.save_model(str(args.output / "model"))
    tokens = max((int(float(e["num_tokens"])) for e in trainer.state.log_history if "num_tokens" in e), default=0)
    (args.output / "summary.json").write_text(json.dumps({"tokens": tokens, "steps": trainer.state.global_step}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
