# The two commands of the README: `make demo` (install + the whole system on the bundled data)
# and `make test` (install + lint + the test suite). Both create ./.venv from scratch if needed.
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?= -n 2

.PHONY: install demo test lint bench

install: $(VENV)/.installed

# torch is installed first and pinned exactly: any looser spec pulls several GB of CUDA wheels.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[convert,chem,dock,report,dev]"
	touch $@

demo: install
	$(BIN)/logos demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/convert.py
	$(BIN)/python benchmarks/data.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/sample.py
