"""A Ray job's files through the bucket (pipelines/training/ray_staging.py) against a real S3-compatible server (moto):
what the host stages a worker fetches byte for byte into its own scratch, and the output it uploads comes back into
the host's directory; the bucket and the worker's scratch are freed afterwards. Training itself is the Ray tests'
(tests/test_shared_nothing.py); here the "trainer" writes an output directory as the real one does."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipelines.profiles import SMOKE
from pipelines.training import ray_staging
from pipelines.training.chat_options import ChatOptions
from pipelines.training.job import TrainJob, write_rows
from tests.fixtures.s3 import s3_with_bucket

pytestmark = pytest.mark.slow
BUCKET = "staging"


@pytest.fixture(scope="module")
def s3():
    with s3_with_bucket(BUCKET) as server:
        yield server


def _bucket(s3):
    import fsspec

    return fsspec.filesystem("s3", endpoint_url=s3.endpoint, use_listings_cache=False)


def _host_job(host: Path) -> TrainJob:
    data = write_rows([{"prompt": "1 + 1 =", "completion": " 2"}], host / "work" / "sft.jsonl")
    model = host / "cache" / "base_checkpoint" / "versions" / "v1"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "sub" / "weights.bin").write_bytes(os.urandom(4096))
    template = host / "template.jinja"
    template.write_text("{{ messages }}")
    return TrainJob(recipe="sft", data_file=str(data), settings=SMOKE.instruct_sft, model_dir=str(model),
                    output_dir=str(host / "staging"), work_dir=str(host / "work" / "sft"),
                    chat=ChatOptions.with_template_file(template))


def test_a_staged_job_is_fetched_into_the_worker_scratch_and_its_output_comes_back(s3, tmp_path, monkeypatch):
    host, worker = tmp_path / "host", tmp_path / "worker"
    job = _host_job(host)
    url = f"s3://{BUCKET}/jobs/llm-lineage-sft-1234"
    staged = ray_staging.stage_job(job, url, host / "work" / "job.json")
    assert (staged.data_file, staged.model_dir, staged.output_dir) == ("inputs/data_file/sft.jsonl", "inputs/model_dir",
                                                                       "output")
    assert TrainJob.load(host / "work" / "job.json") == staged

    monkeypatch.setenv(ray_staging.SCRATCH_ENV, str(worker))
    seen = {}

    def trainer(job_file: Path) -> int:  # reads its inputs and writes an output directory, as train.main does
        fetched = TrainJob.load(job_file)
        seen["job"] = fetched
        seen["weights"] = (Path(fetched.model_dir) / "sub" / "weights.bin").read_bytes()
        seen["rows"] = Path(fetched.data_file).read_text()
        seen["template"] = Path(fetched.chat.chat_template_file).read_text()
        out = Path(fetched.output_dir)
        (out / "nested").mkdir(parents=True)
        (out / "model.safetensors").write_bytes(b"weights")
        (out / "nested" / "training_summary.json").write_text("{}")
        return 0

    assert ray_staging.run_staged(url, "rank-0", trainer, upload=True) == 0
    directory = worker / "ray_jobs" / "llm-lineage-sft-1234" / "rank-0"
    assert Path(seen["job"].model_dir).is_relative_to(directory) and Path(seen["job"].data_file).is_relative_to(directory)
    assert seen["weights"] == (Path(job.model_dir) / "sub" / "weights.bin").read_bytes()
    assert seen["rows"] == Path(job.data_file).read_text() and seen["template"] == "{{ messages }}"
    assert (seen["job"].recipe, seen["job"].settings, seen["job"].chat.chat_template_sha256) == \
        (job.recipe, job.settings, job.chat.chat_template_sha256)
    # the worker freed its scratch, keeping the record of what it fetched
    assert [p.name for p in directory.iterdir()] == [ray_staging.FETCHED_RECORD]
    record = json.loads((directory / ray_staging.FETCHED_RECORD).read_text())
    assert record["url"] == url and record["files"]["model_dir/sub/weights.bin"] == 4096

    (host / "staging").mkdir()
    ray_staging.collect_output(url, host / "staging")
    assert (host / "staging" / "model.safetensors").read_bytes() == b"weights"
    assert (host / "staging" / "nested" / "training_summary.json").is_file()
    assert not _bucket(s3).find(f"{BUCKET}/jobs/")


def test_a_failed_trainer_uploads_nothing_and_the_host_says_where_it_looked(s3, tmp_path, monkeypatch):
    host = tmp_path / "host"
    url = f"s3://{BUCKET}/jobs/llm-lineage-sft-failed"
    ray_staging.stage_job(_host_job(host), url, host / "work" / "job.json")
    monkeypatch.setenv(ray_staging.SCRATCH_ENV, str(tmp_path / "worker"))
    assert ray_staging.run_staged(url, "rank-0", lambda job_file: 1, upload=True) == 1
    with pytest.raises(RuntimeError, match=f"uploaded no output to {url}/output/"):
        ray_staging.collect_output(url, host / "staging")
    ray_staging.discard(url)
    assert not _bucket(s3).find(f"{BUCKET}/jobs/")


def test_a_missing_input_names_the_field_and_the_path(s3, tmp_path):
    job = _host_job(tmp_path)
    Path(job.data_file).unlink()
    with pytest.raises(FileNotFoundError, match=r"data_file .*sft\.jsonl does not exist on this host"):
        ray_staging.stage_job(job, f"s3://{BUCKET}/jobs/missing", tmp_path / "job.json")
