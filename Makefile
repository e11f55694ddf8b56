# medsynth: `make demo` and `make test` each set up .venv first (a quick no-op once it exists).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.medsynth-installed
DEMO_DIR ?= demo_out
export WANDB_MODE ?= offline
export PYTHONHASHSEED ?= 0

.PHONY: setup demo demo-utility test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	@touch $(STAMP)
	@echo "setup done: $(VENV) ($$($(PY) -c 'import torch; print("torch", torch.__version__)'))"

demo: setup
	$(VENV)/bin/medsynth demo --out $(DEMO_DIR) --overwrite

# the downstream-utility test of the demo's synthetic necrosis tiles with the default ResNet-18 (after `make demo`)
SLIDES := $(DEMO_DIR)/data/slides
demo-utility: setup
	$(VENV)/bin/medsynth evaluate --train $(SLIDES)/slide_000.svs $(SLIDES)/slide_001.svs \
	    --heldout $(SLIDES)/slide_002.svs --fake $(DEMO_DIR)/stylegan2/synthetic_necrosis --utility \
	    --rare-class necrosis --mpp 0.5 --tile-size 32 --utility-threads 1 --out $(DEMO_DIR)/reports/utility --overwrite

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

test: lint
	$(PY) -m pytest -q -p no:cacheprovider

# one table of ratios against baselines measured in the same run, also in benchmarks/results/bench.json;
# `--quick` (the default here) keeps it to a few minutes on 2 CPU cores: `make bench BENCH_ARGS=` for the full sizes,
# `make bench BENCH_ARGS="--quick --only tiles ddp"` for some
BENCH_ARGS ?= --quick
bench: setup
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(DEMO_DIR) wandb lightning_logs .pytest_cache
