# One-command setup and run. `make demo` (the main job) and `make test` each create the
# in-repo virtual environment on first use: torch 2.13.0 (the local CPU wheel) first,
# then this package in editable mode with its dev extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
THREADS := OMP_NUM_THREADS=2 MKL_NUM_THREADS=2

.PHONY: setup demo demo-2d test test-slow test-all bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# The main job: train a VP score model on the bundled digits, sample a grid, report test bits/dim.
demo: $(STAMP)
	$(THREADS) $(BIN)/scoresde train configs/digits_vp.toml --workdir outputs/digits
	$(THREADS) $(BIN)/scoresde sample outputs/digits/checkpoints -n 64 --out outputs/digits/samples.png
	$(THREADS) $(BIN)/scoresde likelihood outputs/digits/checkpoints --split test --out outputs/digits/test_bpd.json

# Every sampler on a known 2-D mixture with its exact score (no training).
demo-2d: $(STAMP)
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
	$(THREADS) $(BIN)/python benchmarks/bench_training.py
	$(THREADS) $(BIN)/python benchmarks/bench_sampling_digits.py -n 64  # after `make demo`

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache src/*.egg-info
