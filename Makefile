# `make demo` and `make test` each create the environment from nothing (PyPI only) and run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Lower-priority warnings from TensorFlow's C++ start-up are noise in logs.
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo experiment test test-fast env benchmark format clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# jax: the data-parallel tests; onnx: the ONNX export tests; keras-cv: the GIoU cross-check.
	$(PIP) install -q -e ".[dev,jax,onnx,keras-cv]"
	# CPU build of PyTorch, for the test that runs SimCLR on the torch backend.
	$(PIP) install -q "torch==2.13.0"
	touch $@

env: $(VENV)/.installed

demo: env
	$(VENV)/bin/ssl-keras demo

# The paper's comparison on this repository's shared data (see experiments/paper_cpu.yaml); rerun to continue.
experiment: env
	$(VENV)/bin/ssl-keras experiment experiments/paper_cpu.yaml

test: env
	$(PY) -m pytest -q --durations=15

# Leaves out the tests marked `large` (over about a second each: real-size models, end-to-end
# commands, subprocesses, training loops); under 2 minutes on 2 CPU cores. The slowest are listed.
test-fast: env
	$(PY) -m pytest -q -m "not large" --durations=10

# The one formatter (ruff format, 100 columns, pyproject.toml) and the pyflakes rules.
format: env
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

benchmark: env
	$(PY) benchmarks/pretrain_throughput.py

clean:
	rm -rf $(VENV) *.egg-info
