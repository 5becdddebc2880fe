"""Chat template options (issue #16: "No config sets enable_thinking, a system prompt or another chat
template"): rows rendered through TRL's own dataset preparation on a Qwen3-style model, the options in
the training fingerprint and the checkpoint's lineage.json, and evaluation asking the checkpoint the
way it was trained."""

import json
from dataclasses import replace

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from assets._training import ChatTemplateConfig, stages_lineage
from pipelines.data.formats import user_messages
from pipelines.evaluation.decoding import Decoding, generate_samples
from pipelines.evaluation.versioning import generation_fingerprint
from pipelines.paths import PathOutsideDataRoots
from pipelines.training.chat_options import ChatOptions
from pipelines.training.checkpoint_record import LINEAGE_FILE, recorded_chat_options
from pipelines.training.job import GrpoSettings, TrainJob
from pipelines.training.recipes import RunOptions, dpo, dpo_dataset, grpo, sft, sft_dataset
from tests.fixtures.hf_models import save_qwen3_base
from tests.pipelines.conftest import micro_settings

TERSE = ChatOptions(system_prompt="You are terse.", template_kwargs={"enable_thinking": False})
ROWS = [{"prompt": "What is 2 + 5?", "completion": "7"},
        {"messages": json.dumps([{"role": "system", "content": "Own."}, {"role": "user", "content": "Hi"}]),
         "completion": "Hello"}]
# A template that differs visibly from the model's own: roles in capitals, Qwen3's enable_thinking switch.
OVERRIDE_TEMPLATE = (
    "{%- for message in messages %}{{ '<|im_start|>' + message.role | upper + '\\n' + message.content + "
    "'<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>ASSISTANT\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}{%- endif %}")


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    return save_qwen3_base(tmp_path_factory.mktemp("models") / "Qwen3-Base")


def _trained_text(trainer, tokenizer) -> list[tuple[str, str]]:
    """(whole row, tokens in the loss) of every row TRL prepared."""
    return [(tokenizer.decode(row["input_ids"]),
             tokenizer.decode([t for t, label in zip(row["input_ids"], row["labels"]) if label != -100]))
            for row in trainer.train_dataset]


def test_trl_sft_renders_the_system_prompt_and_enable_thinking_false(qwen3, tmp_path):
    """Qwen3 with enable_thinking=False puts the empty <think> block in the prompt: only the answer is
    trained. Without the kwarg the block is part of the completion; a row's own system prompt stays."""
    from trl import SFTConfig, SFTTrainer

    tokenizer, model = AutoTokenizer.from_pretrained(qwen3), AutoModelForCausalLM.from_pretrained(qwen3)
    args = SFTConfig(output_dir=str(tmp_path), max_length=128, completion_only_loss=True, report_to="none",
                     use_cpu=True)
    prepared = {name: _trained_text(SFTTrainer(model=model, args=args, processing_class=tokenizer,
                                               train_dataset=sft_dataset(ROWS, chat)), tokenizer)
                for name, chat in (("plain", ChatOptions()), ("terse", TERSE))}
    assert prepared["terse"] == [
        ("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWhat is 2 + 5?<|im_end|>\n"
         "<|im_start|>assistant\n<think>\n\n</think>\n\n7<|im_end|>\n", "7<|im_end|>\n"),
        ("<|im_start|>system\nOwn.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
         "<|im_start|>assistant\n<think>\n\n</think>\n\nHello<|im_end|>\n", "Hello<|im_end|>\n")]
    assert prepared["plain"][0] == (
        "<|im_start|>user\nWhat is 2 + 5?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n7<|im_end|>\n",
        "<think>\n\n</think>\n\n7<|im_end|>\n")


def test_trl_dpo_prompts_carry_the_same_options(qwen3, tmp_path):
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(qwen3)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(qwen3), processing_class=tokenizer,
                         args=DPOConfig(output_dir=str(tmp_path), max_length=128, report_to="none", use_cpu=True),
                         train_dataset=dpo_dataset([{"prompt": "What is 2 + 5?", "chosen": "7", "rejected": "8"}],
                                                   TERSE))
    row = trainer.train_dataset[0]
    assert tokenizer.decode(row["prompt_ids"]) == ("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\n"
                                                   "What is 2 + 5?<|im_end|>\n<|im_start|>assistant\n"
                                                   "<think>\n\n</think>\n\n")
    assert tokenizer.decode(row["chosen_ids"]) == "7<|im_end|>\n"


def test_the_generation_prompt_gets_the_system_prompt_and_template_kwargs(qwen3):
    tokenizer = AutoTokenizer.from_pretrained(qwen3)
    assert TERSE.generation_prompt(tokenizer, user_messages("Q?")) == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert ChatOptions().generation_prompt(tokenizer, user_messages("Q?")) == (
        "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n")


def test_the_fingerprint_holds_the_system_prompt_kwargs_and_template_content(tmp_path):
    data = tmp_path / "sft.jsonl"
    data.write_text('{"prompt": "What is 2 + 5?", "completion": "7"}\n')
    job = TrainJob(recipe="sft", data_file=str(data), settings=micro_settings(2), model_dir=str(tmp_path))
    template = tmp_path / "a" / "chat.jinja"
    template.parent.mkdir()
    template.write_text(OVERRIDE_TEMPLATE)
    with_file = ChatOptions.with_template_file(template)
    versions = {
        "none": job.fingerprint(),
        "system": replace(job, chat=ChatOptions(system_prompt="You are terse.")).fingerprint(),
        "other system": replace(job, chat=ChatOptions(system_prompt="You are verbose.")).fingerprint(),
        "kwargs": replace(job, chat=ChatOptions(template_kwargs={"enable_thinking": False})).fingerprint(),
        "template": replace(job, chat=with_file).fingerprint(),
    }
    assert len(set(versions.values())) == len(versions)
    assert replace(job, chat=ChatOptions()).fingerprint() == versions["none"]  # unset options change nothing

    moved = tmp_path / "b" / "renamed.jinja"  # the same template elsewhere is the same job
    moved.parent.mkdir()
    moved.write_text(OVERRIDE_TEMPLATE)
    assert replace(job, chat=ChatOptions.with_template_file(moved)).fingerprint() == versions["template"]
    template.write_text(OVERRIDE_TEMPLATE.replace("upper", "lower"))  # edited in place: a new job
    assert replace(job, chat=ChatOptions.with_template_file(template)).fingerprint() != versions["template"]

    saved = replace(job, chat=with_file).save(tmp_path / "job.json")  # the subprocess reads what was hashed
    assert TrainJob.load(saved).chat == with_file


def test_the_launchpad_config_reads_the_template_inside_the_data_roots(tmp_path):
    assert ChatTemplateConfig().options() is None  # nothing set: the job is what it was before
    template = tmp_path / "chat.jinja"
    template.write_text(OVERRIDE_TEMPLATE)
    options = ChatTemplateConfig(system_prompt="S", chat_template_kwargs={"enable_thinking": False},
                                 chat_template=str(template)).options()
    assert options.record() == {"system_prompt": "S", "template_kwargs": {"enable_thinking": False},
                                "chat_template_file": str(template.resolve()),
                                "chat_template_sha256": options.chat_template_sha256}
    with pytest.raises(ValueError, match="is not a .jinja/.j2 file"):
        ChatTemplateConfig(chat_template=str(tmp_path / "missing.jinja")).options()
    with pytest.raises(PathOutsideDataRoots, match="chat.chat_template"):
        ChatTemplateConfig(chat_template="/etc/passwd.jinja").options()


def test_sft_saves_the_override_and_evaluation_asks_as_recorded(qwen3, tmp_path):
    """A real TRL SFT run with a template file: the checkpoint carries that template, lineage.json the
    options, and evaluation prompts with them unless told otherwise."""
    template = tmp_path / "chat.jinja"
    template.write_text(OVERRIDE_TEMPLATE)
    chat = ChatOptions.with_template_file(template, system_prompt="You are terse.",
                                          template_kwargs={"enable_thinking": False})
    out = tmp_path / "out"
    summary = sft(qwen3, ROWS, replace(micro_settings(2, batch_size=2), max_length=64), out,
                  options=RunOptions(chat=chat))
    assert summary.steps == 2
    assert AutoTokenizer.from_pretrained(out).chat_template == OVERRIDE_TEMPLATE

    job = TrainJob(recipe="sft", data_file=str(tmp_path / "rows.jsonl"), settings=micro_settings(2), chat=chat)
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS))
    (out / LINEAGE_FILE).write_text(json.dumps(stages_lineage([job], trust=False)))
    assert recorded_chat_options(out) == chat
    item = [{"suite": "s", "problem_id": "p", "question": "What is 2 + 5?", "answer": "7"}]
    decoding = Decoding("greedy", max_new_tokens=2, batch_size=1, seed=0)
    as_trained = generate_samples("instruct", out, item, decoding, model_version="v")[0]["prompt"]
    assert as_trained == ("<|im_start|>SYSTEM\nYou are terse.<|im_end|>\n<|im_start|>USER\nWhat is 2 + 5?<|im_end|>\n"
                          "<|im_start|>ASSISTANT\n<think>\n\n</think>\n\n")
    overridden = chat.overridden(system_prompt="", template_kwargs={"enable_thinking": True})
    assert generate_samples("instruct", out, item, decoding, model_version="v", chat=overridden)[0]["prompt"] == (
        "<|im_start|>USER\nWhat is 2 + 5?<|im_end|>\n<|im_start|>ASSISTANT\n")
    assert generate_samples("base", out, item, decoding, model_version="v")[0]["prompt"] == (
        "Question: What is 2 + 5?\nAnswer:")  # the base variant has no chat template

    template.write_text(OVERRIDE_TEMPLATE + " ")  # changed after the job was fingerprinted
    with pytest.raises(ValueError, match="changed since this job was fingerprinted"):
        sft(qwen3, ROWS, micro_settings(1, batch_size=2), tmp_path / "again", options=RunOptions(chat=chat))


def test_dpo_and_grpo_train_with_the_override_and_save_it(qwen3, tmp_path):
    """Neither DPOConfig nor GRPOConfig takes a template file: the override is installed on the tokenizer."""
    template = tmp_path / "chat.jinja"
    template.write_text(OVERRIDE_TEMPLATE)
    options = RunOptions(chat=ChatOptions.with_template_file(template, system_prompt="You are terse.",
                                                             template_kwargs={"enable_thinking": False}))
    settings = replace(micro_settings(1, batch_size=2), max_length=64)
    dpo(qwen3, [{"prompt": "What is 2 + 5?", "chosen": "7", "rejected": "8"}] * 2, settings, 0.1, tmp_path / "dpo",
        options)
    grpo(qwen3, [{"prompt": "What is 2 + 5?", "answer": "7"}] * 2, settings,
         GrpoSettings(num_generations=2, max_completion_length=4), tmp_path / "grpo", options)
    for stage in ("dpo", "grpo"):
        assert AutoTokenizer.from_pretrained(tmp_path / stage).chat_template == OVERRIDE_TEMPLATE, stage


def test_eval_outputs_are_versioned_by_the_chat_options_they_used():
    plain = generation_fingerprint("instruct", "m", "s", "d")
    assert generation_fingerprint("instruct", "m", "s", "d", {}) == plain  # earlier evaluations stand
    thinking = generation_fingerprint("instruct", "m", "s", "d", {"template_kwargs": {"enable_thinking": True}})
    not_thinking = generation_fingerprint("instruct", "m", "s", "d", {"template_kwargs": {"enable_thinking": False}})
    assert len({plain, thinking, not_thinking}) == 3
