# The two Quickstart commands: `make demo` (the default job: QM9 molecules) and `make test`
# (the test suite). Both create or reuse .venv. `make demo-toy` is the one-minute toy job.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# VEDA's sampler (docs/molecules.md, round four): Euler with annealing on the arcsin grid
DEMO_SAMPLER ?= euler_anneal
DEMO_SAMPLER_ARGS ?= --spacing arcsin -o level_min=0.001
DEMO_STEPS ?= 100
# the shipped qm9-small (VEDA's recipe too, 8x the molecules seen) samples with its card's
# sampler and grid
SHIPPED_SAMPLER ?= euler_anneal
SHIPPED_SAMPLER_ARGS ?= --spacing arcsin -o level_min=0.001
DEMO_DIR ?= runs/demo

.PHONY: demo demo-toy test lint lock bench clean-demo

# Every install goes through constraints.txt, the lock of the whole environment (exact
# versions of every package, torch and torchaudio among them), so a fresh machine months from
# now gets the set that was tested. `make lock` rebuilds it from pyproject.toml's ranges.
PIP_VERSION := 26.3
CONSTRAINTS := constraints.txt
# the peer of benchmarks/error_vs_nfe.py; --no-deps: see the bench extra in pyproject.toml
K_DIFFUSION := 0.1.1.post1

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@command -v $(PY) >/dev/null || { echo "need $(PY) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "pip==$(PIP_VERSION)"
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[dev]"
	touch $(STAMP)

# Re-resolve the newest versions pyproject.toml allows in a throwaway venv and write them to
# constraints.txt; then run `make test` (it reinstalls .venv from the new lock) and commit.
lock:
	@command -v $(PY) >/dev/null || { echo "need $(PY) on PATH"; exit 1; }
	rm -rf .venv-lock && $(PY) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet "pip==$(PIP_VERSION)"
	.venv-lock/bin/python -m pip install --quiet -e ".[dev,bench]"
	.venv-lock/bin/python -m pip install --quiet --no-deps "k-diffusion==$(K_DIFFUSION)"
	{ echo "# The tested environment: make uses it for every install; make lock rewrites it."; \
	  .venv-lock/bin/python -m pip freeze --all --exclude-editable | grep -v "^pip=="; \
	} > $(CONSTRAINTS)
	rm -rf .venv-lock

# Prepare QM9 (once), train qm9-tiny (or resume/reuse the checkpoint a previous run left in
# runs/demo), sample 200 molecules, print EDM's metrics. SDF/XYZ files and preview.png land
# in runs/demo/samples. A fit stopped early (SIGTERM, Ctrl-C) exits 143/130 after saving, so
# make stops before sampling a half-trained model; `make demo` again resumes it (keep the
# recipe's lines without `-` or `|| true`: tests/test_run_safety.py runs it).
demo: $(STAMP)
	test -f data/qm9/qm9.npz || $(BIN)/diffplat data prepare qm9
	$(BIN)/diffplat fit -c configs/molecules/qm9-tiny.yaml --trainer.default_root_dir $(DEMO_DIR) --ckpt_path last
	$(BIN)/diffplat sample --ckpt $(DEMO_DIR)/checkpoints/last.ckpt --num 200 --sampler $(DEMO_SAMPLER) $(DEMO_SAMPLER_ARGS) --steps $(DEMO_STEPS) --seed 0 --overwrite --out $(DEMO_DIR)/samples
	$(BIN)/diffplat evaluate --samples $(DEMO_DIR)/samples --json $(DEMO_DIR)/metrics.json
	@echo "--- 200 molecules from the shipped qm9-small, its card's sampler, same steps and seed (the same network and recipe on the whole training split, 24,000 steps of 64: 8x the molecules seen; models/qm9-small/MODEL_CARD.md):"
	$(BIN)/diffplat evaluate --model qm9-small --num 200 --sampler $(SHIPPED_SAMPLER) $(SHIPPED_SAMPLER_ARGS) --steps $(DEMO_STEPS) --seed 0 --no-progress --json $(DEMO_DIR)/shipped-metrics.json

demo-toy: $(STAMP)
	$(BIN)/diffplat fit -c configs/toy/gmm.yaml --trainer.default_root_dir runs/demo-toy
	$(BIN)/diffplat sample --ckpt runs/demo-toy/checkpoints/last.ckpt --num 2000 --sampler heun --steps 18 --seed 0 --overwrite --out runs/demo-toy/samples
	$(BIN)/diffplat evaluate --samples runs/demo-toy/samples --json runs/demo-toy/metrics.json

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# The benchmark-only peers: the bench extra, then k-diffusion without its image-model deps.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[dev,bench]"
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) --no-deps "k-diffusion==$(K_DIFFUSION)"

lint: $(STAMP)
	$(BIN)/ruff check .
