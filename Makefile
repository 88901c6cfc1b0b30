# Two commands matter: `make demo` runs the packaged quickstart, `make test` runs lint + tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint clean bench-gpu bench-cpu

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: install
	$(VENV)/bin/mxplain run --out runs/quickstart --overwrite

lint: install
	$(VENV)/bin/ruff check core plugins tests benchmarks examples

test: lint
	$(VENV)/bin/pytest

# issue 9's benchmarks in one command (make bench-gpu PYTHON=/path/to/python); table: benchmarks/results-<device>.md
bench-gpu:
	$(PYTHON) benchmarks/run_all.py --device cuda

bench-cpu:
	$(PYTHON) benchmarks/run_all.py --device cpu --small

clean:
	rm -rf $(VENV) runs build dist *.egg-info
