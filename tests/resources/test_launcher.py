"""The training launcher: a real trainer subprocess under Pipes, whose metrics the step forwards."""

import dagster as dg
import psutil

from pipelines.data.datasets import build_corpus
from pipelines.training.job import TrainJob, write_rows
from pipelines.training.train import SUMMARY_FILE
from resources import TrainingLauncher
from tests.pipelines.conftest import MICRO_SHAPE, micro_problems, micro_settings, micro_tokenizer_dir  # noqa: F401

# Far more steps than the micro model trains in the second or so the launcher needs to stop it.
MANY_STEPS = 5000


def test_failed_metric_forwarding_stops_the_trainer_and_fails_the_step(tmp_path, micro_problems,
                                                                       micro_tokenizer_dir):
    corpus = write_rows(build_corpus(micro_problems), tmp_path / "corpus.jsonl")
    job = TrainJob(recipe="pretrain", data_file=str(corpus), settings=micro_settings(MANY_STEPS),
                   tokenizer_dir=str(micro_tokenizer_dir), model_shape=MICRO_SHAPE,
                   output_dir=str(tmp_path / "out"), work_dir=str(tmp_path / "work"))
    batches = []

    def tracking_store_gone(points):
        batches.append(points)
        raise ConnectionError("tracking store gone")

    @dg.asset
    def trained(context: dg.AssetExecutionContext, launcher: TrainingLauncher) -> None:
        launcher.run(context, job, tmp_path / "job.json", log_points=tracking_store_gone)

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([trained], resources={"launcher": TrainingLauncher(work_root=str(tmp_path))},
                            instance=instance, raise_on_error=False)
    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error
    assert "tracking store gone" in (error.cause or error).message
    assert len(batches) == 1 and ("loss", 1) in {(key, step) for key, step, _ in batches[0]}
    assert not _running_trainers()  # stopped and reaped before the step failed
    assert not (tmp_path / "out" / SUMMARY_FILE).exists()  # not trained to the end
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert not any(f"step {MANY_STEPS}/{MANY_STEPS}" in message for message in messages)


def _running_trainers() -> list[psutil.Process]:
    running = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "pipelines.training.train" in child.cmdline():
                running.append(child)
        except psutil.Error:  # exited (or a zombie) while we looked: not running
            pass
    return running
