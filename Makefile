PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test check demo lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch/torchvision are pinned here (pyproject declares ranges); pip takes them from the local disk
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check maskagain tests benchmarks
	$(BIN)/python -m pytest -q -x --durations=15 tests

# the fast tier: everything but the tests marked slow, subprocess, torchrun or e2e (under 2 minutes)
check: $(STAMP)
	$(BIN)/ruff check maskagain tests benchmarks
	$(BIN)/python -m pytest -q -x -m "not slow" --durations=10 tests

demo: $(STAMP)
	$(BIN)/maskagain demo

lint: $(STAMP)
	$(BIN)/ruff check maskagain tests benchmarks
	$(BIN)/ruff format --check maskagain tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format maskagain tests benchmarks
	$(BIN)/ruff check --fix maskagain tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
