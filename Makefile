# One-command setup and run. `make demo` (the main job) and `make test` each create the
# in-repo virtual environment on first use: torch 2.13.0 (the local CPU wheel) first,
# then this package in editable mode with its dev extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
THREADS := OMP_NUM_THREADS=2 MKL_NUM_THREADS=2

.PHONY: setup demo test test-slow test-all bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(THREADS) $(BIN)/scoresde demo --out outputs/demo

test: $(STAMP)
	$(THREADS) $(BIN)/python -m pytest

test-slow: $(STAMP)
	$(THREADS) $(BIN)/python -m pytest -m slow

test-all: $(STAMP)
	$(THREADS) $(BIN)/python -m pytest -m "slow or not slow"

bench: $(STAMP)
	$(THREADS) $(BIN)/python benchmarks/bench_samplers.py
	$(THREADS) $(BIN)/python benchmarks/bench_likelihood.py

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache src/*.egg-info
