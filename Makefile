# segbench: `make bench` installs everything and runs the default benchmark; `make test` tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install bench bench-full bench-harness report test lint clean-runs

# Pinned versions (requirements.lock) so every number in results/ can be reproduced; torch is
# the 2.13.0 CPU build (an unpinned torch would pull a multi-GB CUDA build).
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The default benchmark (quick CPU profile): fetches and verifies CamVid if it is not there.
bench: install
	$(BIN)/segbench data ensure camvid
	$(BIN)/segbench run configs/quick.yaml

# Heavier profile: native 360x480, bigger models. Its rows live apart from the quick ones.
bench-full: install
	$(BIN)/segbench data ensure camvid
	$(BIN)/segbench run configs/full.yaml

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
