# One-command setup and run. `make demo` (the main job) and `make test` each create the
# in-repo virtual environment on first use: torch 2.13.0 (the local CPU wheel) first,
# then this package in editable mode; `make test` (and the docs and benchmarks) add its dev
# extras, which the demo does not need (they take about a third of the setup's time).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORE := $(VENV)/.installed-core
STAMP := $(VENV)/.installed
THREADS := OMP_NUM_THREADS=2 MKL_NUM_THREADS=2

.PHONY: setup demo demo-2d test test-slow test-all docs docs-screenshots bench bench-guidance bench-processes bench-peers \
	lint clean

$(CORE): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	touch $(CORE)

$(STAMP): $(CORE)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# The main job: train a VP score model on the bundled digits, then draw 1,000 samples and report their
# Fréchet distance and KID against the test digits next to the floor, and the test bits/dim.
demo: $(CORE)
	$(THREADS) $(BIN)/scoresde train configs/digits_vp.toml --workdir outputs/digits
	$(THREADS) $(BIN)/scoresde evaluate outputs/digits/checkpoints --sampler ode --steps 50 --option method=heun \
		-n 1000 --samples-out outputs/digits/samples.png --out outputs/digits/report.json

# Every sampler on a known 2-D mixture with its exact score (no training).
demo-2d: $(CORE)
	$(THREADS) $(BIN)/scoresde demo --out outputs/demo

# The tests run on two pytest-xdist workers, one torch thread each, a test file per worker at a time (module
# fixtures are built once): 1.7x faster than one process with two threads on 2 cores (many small tensor ops).
PYTEST := $(BIN)/python -m pytest -n 2 --dist loadfile

test: $(STAMP)
	$(THREADS) $(PYTEST)

test-slow: $(STAMP)
	$(THREADS) $(PYTEST) -m slow

test-all: $(STAMP)
	$(THREADS) $(PYTEST) -m "slow or not slow"

# The documentation site: the walkthrough's figures (scoresde figures), then Sphinx in strict mode (any warning or
# broken reference fails) into site/. MathJax comes from the npm registry once, so the site renders math offline.
MATHJAX := docs/_static/mathjax/tex-chtml.js

$(MATHJAX):
	mkdir -p build/npm && cd build/npm && npm pack --silent mathjax@3.2.2 >/dev/null && tar xzf mathjax-3.2.2.tgz
	mkdir -p docs/_static/mathjax/output/chtml/fonts
	cp build/npm/package/es5/tex-chtml.js docs/_static/mathjax/
	cp -r build/npm/package/es5/output/chtml/fonts/woff-v2 docs/_static/mathjax/output/chtml/fonts/

docs: $(STAMP) $(MATHJAX)
	$(THREADS) $(BIN)/scoresde figures --out docs/figures
	$(BIN)/sphinx-build -W --keep-going -n -q -b html docs site
	@echo "built site/index.html"

# Screenshots of the built site's pages in headless Chromium (from the system packages), to look at.
docs-screenshots: docs
	$(BIN)/python docs/screenshot.py site docs/screenshots

bench: $(STAMP)
	$(THREADS) $(BIN)/python benchmarks/bench_samplers.py
	$(THREADS) $(BIN)/python benchmarks/bench_solvers.py
	$(THREADS) $(BIN)/python benchmarks/bench_overhead.py
	$(THREADS) $(BIN)/python benchmarks/bench_likelihood.py
	$(THREADS) $(BIN)/python benchmarks/bench_inverse.py
	$(THREADS) $(BIN)/python benchmarks/bench_training.py
	$(THREADS) $(BIN)/python benchmarks/bench_official.py
	$(THREADS) $(BIN)/python benchmarks/bench_sampling_digits.py -n 64  # after `make demo`
	$(THREADS) $(BIN)/python benchmarks/bench_quality_digits.py -n 1000  # after `make demo`
	$(THREADS) $(BIN)/python benchmarks/bench_fast_digits.py  # after `make demo`

# Controllable generation on the main-job model (after `make demo`): trains the noise-conditional classifier
# (13 s) and the label-conditional model (about 5 min; both resume, so a finished run is a no-op), then measures
# classifier guidance, classifier-free guidance, inpainting and colorization (about 20 min).
bench-guidance: $(STAMP)
	$(THREADS) $(BIN)/scoresde train-classifier configs/digits_classifier.toml --workdir outputs/digits_classifier
	$(THREADS) $(BIN)/scoresde train configs/digits_vp_cond.toml --workdir outputs/digits_cond
	$(THREADS) $(BIN)/python benchmarks/bench_guidance_digits.py

# Which forward process trains the best digits model (after `make demo`, whose VP model is the baseline): trains the
# EDM, rectified-flow and cosine-VP models of configs/ and two time-sampling variants (about 9 min each on 2 cores;
# a finished run is a no-op), then measures FD at 10 / 20 NFE and any budget, KID, pixel FD and test bits/dim over
# 3 seeds (about 55 minutes for the six models).
bench-processes: $(STAMP)
	$(THREADS) $(BIN)/scoresde train configs/digits_edm.toml --workdir outputs/digits_edm
	$(THREADS) $(BIN)/scoresde train configs/digits_rf.toml --workdir outputs/digits_rf
	$(THREADS) $(BIN)/scoresde train configs/digits_cosine.toml --workdir outputs/digits_cosine
	$(THREADS) $(BIN)/scoresde train configs/digits_rf.toml --workdir outputs/digits_rf_uniform \
		--set training.time_sampling=uniform
	$(THREADS) $(BIN)/scoresde train configs/digits_edm.toml --workdir outputs/digits_edm_p0 --set training.time_mean=0.0
	$(THREADS) $(BIN)/python benchmarks/bench_processes.py

# scoresde's fast samplers against diffusers and k-diffusion on the same score and the same x_T (2-D mixture, and
# the main-job digits model when `make demo` has run). The peers are a benchmark extra, never library dependencies;
# k-diffusion goes in with --no-deps (its metadata pulls torchvision and another torch).
bench-peers: $(STAMP)
	$(BIN)/pip install --quiet -e '.[peers]'
	$(BIN)/pip install --quiet --no-deps k-diffusion==0.1.1.post1
	$(THREADS) $(BIN)/python benchmarks/bench_peers.py
	$(THREADS) $(BIN)/python benchmarks/bench_peers_processes.py  # after `make bench-processes`

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) outputs site build docs/_static/mathjax .pytest_cache .ruff_cache src/*.egg-info
