"""A training fingerprint holds everything that changes the checkpoint, how it is launched included
(issue #16: a 2-process checkpoint, trained on twice the global batch, was reused for 1 process)."""

from dataclasses import replace

import pytest

from pipelines.training.job import TrainJob
from resources import TrainingLauncher
from tests.pipelines.conftest import micro_settings


@pytest.fixture
def job(tmp_path):
    data = tmp_path / "sft.jsonl"
    data.write_text('{"prompt": "What is 2 + 5?", "completion": "7"}\n')
    return TrainJob(recipe="sft", data_file=str(data), settings=micro_settings(2), model_dir=str(tmp_path),
                    output_dir=str(tmp_path / "out"))


def test_the_launch_is_part_of_the_fingerprint(job, tmp_path):
    one = TrainingLauncher(work_root=str(tmp_path), num_processes=1, force_cpu=True)
    two = TrainingLauncher(work_root=str(tmp_path), num_processes=2, force_cpu=True)
    assert one.launch_settings() == {"num_processes": 1, "device": "cpu"}
    assert two.launch_settings() == {"num_processes": 2, "device": "cpu"}
    launched = {n: replace(job, **launcher.launch_settings()) for n, launcher in ((1, one), (2, two))}
    assert launched[1].fingerprint() != launched[2].fingerprint()
    assert launched[1].fingerprint() == replace(job, **one.launch_settings()).fingerprint()  # stable
    assert replace(job, device="gpu").fingerprint() != job.fingerprint()  # bf16 on a GPU, fp32 on CPU
    assert replace(job, output_dir="/elsewhere").fingerprint() == job.fingerprint()  # where it goes is not what


def test_a_job_refuses_to_run_with_another_process_count_than_its_fingerprint_says(job, monkeypatch):
    job.validate_runnable()
    monkeypatch.setenv("WORLD_SIZE", "2")  # what accelerate sets in each of 2 processes
    with pytest.raises(ValueError, match="num_processes=1.*runs with 2 processes"):
        job.validate_runnable()
    replace(job, num_processes=2).validate_runnable()
