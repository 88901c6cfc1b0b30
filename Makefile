# Two commands matter: `make demo` runs the packaged quickstart, `make test` runs lint + tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint clean bench-gpu bench-cpu quickstart-models gpu-editor-128 study-augment

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

# The quickstart's shipped AttGAN (plugins/mxplain_attgan/README.md): train it (resumes an interrupted
# run; ~65 min on one CPU thread) and export the float16 inference checkpoint with its provenance.
QS_EDITOR_RUN ?= runs/quickstart-editor
quickstart-models: install
	OMP_NUM_THREADS=1 $(VENV)/bin/mxplain run examples/quickstart-train.toml --out $(QS_EDITOR_RUN) --resume
	OMP_NUM_THREADS=1 $(PY) -m mxplain_attgan.export $(QS_EDITOR_RUN) \
		--out plugins/mxplain_attgan/data/quickstart_attgan.pt

# issue 17's GPU check: the shipped editor's recipe at 128 px, then the quickstart at 128 px with it
# (examples/quickstart-train-128.toml, examples/quickstart-128.toml; docs/gpu.md)
gpu-editor-128: install
	$(VENV)/bin/mxplain run examples/quickstart-train-128.toml --device cuda --out runs/quickstart-128-editor --resume
	$(PY) -m mxplain_attgan.export runs/quickstart-128-editor --out runs/quickstart-128-attgan.pt
	$(VENV)/bin/mxplain run examples/quickstart-128.toml --device cuda --out runs/quickstart-128

# issue 21 item 2: seed 001's small-data augmentation study (docs/augmentation.md); one CPU thread
AUGMENT_OUT ?= runs/augment
study-augment: install
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m mxplain.studies.augmentation --out $(AUGMENT_OUT)

# issue 9's benchmarks in one command (make bench-gpu PYTHON=/path/to/python); table: benchmarks/results-<device>.md
bench-gpu:
	$(PYTHON) benchmarks/run_all.py --device cuda

bench-cpu:
	$(PYTHON) benchmarks/run_all.py --device cpu --small

clean:
	rm -rf $(VENV) runs build dist *.egg-info
