# Every target depends on `venv`, so any one of them works first on a fresh clone.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: venv test test-slow demo bench study tabular gpu-check lint format clean

venv: $(STAMP)

# torch is installed first and pinned: on a CPU machine `torch==2.13.0` resolves to the local CPU
# wheel; a GPU user installs their CUDA build of 2.13.0 into .venv beforehand (README).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $(STAMP)

test: venv
	$(BIN)/python -m pytest -m "not slow and not gpu" -q $(ARGS)

test-slow: venv
	$(BIN)/python -m pytest -m "slow and not gpu" -q $(ARGS)

demo: venv
	$(BIN)/attnas-search experiment=cpu_demo $(ARGS)

# The tabular benchmark (benchmarks/distant_match_k2): resumable; run it again to continue.
tabular: venv
	OMP_NUM_THREADS=1 $(BIN)/attnas-bench $(ARGS)

bench: venv
	$(BIN)/python -m experiments.bench $(ARGS)

# The searcher study (experiments/searcher_study.py): GPB against random, evolution, Optuna and
# BoTorch on the tabular benchmark, e.g. make study ARGS="--table synthetic --quick".
# The peers (Optuna) come with the dev extra that `venv` installs; elsewhere: pip install ".[peers]".
study: venv
	OMP_NUM_THREADS=1 $(BIN)/python -m experiments.searcher_study $(ARGS)

# The GPU path (experiments/gpu_check.py, under 5 minutes on one GPU): the gpu-marked tests, AMP
# search step and GPB trial, CUDA determinism, bench on CUDA, paper-size peak memory, NCCL DDP;
# JSON in experiments/results/gpu/. Without a GPU: make gpu-check ARGS=--cpu-dry-run.
gpu-check: venv
	$(BIN)/python -m experiments.gpu_check $(ARGS)

lint: venv
	$(BIN)/ruff check attnas tests experiments
	$(BIN)/ruff format --check attnas tests experiments

format: venv
	$(BIN)/ruff format attnas tests experiments
	$(BIN)/ruff check --fix attnas tests experiments

clean:
	rm -rf $(VENV) .pytest_cache
