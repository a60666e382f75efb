# The README's two commands: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Airflow lives in its own venv: airflow-core 3.3 pins fastapi<0.137, the dev extra's
# stac-fastapi-pgstac needs fastapi>=0.141.1. geodelta goes in with its run-time extras
# ([all]: GX validation, LLM, STAC APIs, torch), never with [dev].
AIRFLOW_VENV  := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed
DEMO_OUT ?= build/demo

.PHONY: demo test lint install install-airflow clean bench

# Installs are constrained to the versions the suite last passed with (requirements/): a fresh
# resolve once pulled a newer pandas that GX could not use under warnings-as-errors.
CONSTRAINTS         := requirements/constraints.txt
AIRFLOW_CONSTRAINTS := requirements/constraints-airflow.txt

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: pip finds the local CPU build of exactly this version.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[all,dev]"
	touch $(STAMP)

$(AIRFLOW_STAMP): pyproject.toml $(AIRFLOW_CONSTRAINTS)
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install -q --upgrade pip
	# torch first, pinned (geodelta's runtime deps need it): the local CPU build, not CUDA.
	$(AIRFLOW_VENV)/bin/python -m pip install -q "torch==2.13.0"
	$(AIRFLOW_VENV)/bin/python -m pip install -q -c $(AIRFLOW_CONSTRAINTS) "apache-airflow>=3.3" -e ".[all]"
	touch $(AIRFLOW_STAMP)

install: $(STAMP)

install-airflow: $(AIRFLOW_STAMP)

demo: $(STAMP)
	$(VENV)/bin/geodelta demo --out $(DEMO_OUT)

# Every test runs: the Debian packages the tests start (PostgreSQL + PostGIS, Chromium) are
# installed first when this machine allows it (root or passwordless sudo); otherwise it stops at
# once naming them. GEODELTA_ALLOW_SKIPS=1 is the opt-out (those tests skip, listed by pytest).
test: $(STAMP) $(AIRFLOW_STAMP)
	bash tools/system-packages.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	bash tools/typecheck.sh $(VENV)/bin/mypy
	$(PY) -m pytest -m "not network" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench_build.py

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
