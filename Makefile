# segbench: `make bench` installs everything and runs the default benchmark; `make test` tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install bench reference bench-full bench-device bench-harness report test lint clean-runs

# Pinned versions (requirements.lock) so every number in results/ can be reproduced; torch is
# the 2.13.0 CPU build (an unpinned torch would pull a multi-GB CUDA build).
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The default benchmark (quick CPU profile), run on *your* machine: fetches and verifies CamVid
# if it is not there, runs every method at CPU size (the FCNs with 3 seeds), the upsampling
# study, fold 0 of Stanford Background (classical methods and two short FCN runs), and writes your rows and report to runs/results/ (git-ignored), beside the committed
# reference in results/: score differences and time ratios. A rerun resumes: finished rows of
# the same code, settings and data are kept.
bench: install
	$(BIN)/segbench data ensure camvid
	$(BIN)/segbench run configs/quick.yaml --no-report
	$(BIN)/python -m deep.upsampling_study --config configs/deep_cpu.yaml
	$(BIN)/segbench data ensure stanford_background
	$(BIN)/segbench run configs/stanford_quick.yaml --no-report
	$(BIN)/segbench report
	@echo "your report: runs/results/README.md (compared with the reference in results/)"

# The explicit step that replaces the committed reference (results/) by your rows of
# runs/results (whole config groups) and regenerates results/. Maintainers only, after `make bench`.
reference: install
	$(BIN)/segbench promote

# Heavier profile: native 360x480. Its rows live apart from the quick ones.
bench-full: install
	$(BIN)/segbench data ensure camvid
	$(BIN)/segbench run configs/full.yaml --no-report
	$(BIN)/segbench run configs/classical.yaml --no-report
	$(BIN)/segbench data ensure stanford_background
	$(BIN)/segbench run configs/stanford.yaml --no-report
	$(BIN)/segbench report

# Full-resolution FCN training: meant for a GPU (CUDA + mixed precision); resumes after a kill.
bench-device: install
	$(BIN)/segbench data ensure camvid
	$(BIN)/segbench run configs/deep_device.yaml

# Benchmarks of the harness itself (evaluator throughput, decoding time).
bench-harness: install
	$(BIN)/segbench benchmark all

report: install
	$(BIN)/segbench report

test: install
	$(BIN)/python -m pytest -q
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean-runs:
	rm -rf runs
