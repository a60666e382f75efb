# The README's two commands: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_OUT ?= build/demo

.PHONY: demo test lint install clean bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: pip finds the local CPU build of exactly this version.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[all,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/geodelta demo --out $(DEMO_OUT)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	bash tools/typecheck.sh $(VENV)/bin/mypy
	$(PY) -m pytest -m "not network" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench_build.py

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
