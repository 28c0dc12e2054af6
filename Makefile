# The README's commands. `make test` and `make demo` work on a fresh clone: they create the
# virtualenv and install the project with its dev extras (embedded PostgreSQL and broker).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install test demo bench lint format typecheck migrate clean

install: $(VENV)/.installed

# Exact versions from constraints.txt (the image installs the same ones).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint constraints.txt -e '.[dev]'
	touch $@

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The sink end to end on embedded PostgreSQL and broker, with a sample stream and a summary.
demo: install
	$(BIN)/python -m dev.demo

# The sink against the raw COPY ceiling and a naive consumer (figures: BENCHMARKS.md).
bench: install
	$(BIN)/python -m dev.bench $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check consumer handlers dev migrations tests
	$(BIN)/ruff format --check consumer handlers dev migrations tests
	$(BIN)/mypy

format: install
	$(BIN)/ruff format consumer handlers dev migrations tests
	$(BIN)/ruff check --fix consumer handlers dev migrations tests

typecheck: install
	$(BIN)/mypy

migrate: install
	$(BIN)/omnisink migrate

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
