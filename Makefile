# The two Quickstart commands: `make demo` (train, sample and score the default job) and
# `make test` (the test suite). Both create or reuse .venv.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean-demo

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need $(PY) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/diffplat fit -c configs/toy/gmm.yaml --trainer.default_root_dir runs/demo
	$(BIN)/diffplat sample --ckpt runs/demo/checkpoints/last.ckpt --num 2000 --sampler heun --steps 18 --seed 0 --out runs/demo/samples
	$(BIN)/diffplat evaluate --samples runs/demo/samples --json runs/demo/metrics.json

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
