# selfevo: `make demo` runs the main job, `make test` runs lint and the test suite.
# Both create .venv on first use. On a machine without an NVIDIA GPU the CPU build of torch
# goes in first, so nothing pulls the multi-GB CUDA wheels.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# The CPU wheel to install first on machines without a GPU. Where the package index serves
# only CUDA builds, add: TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_CPU ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: install demo test lint format clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "GPU found: torch comes from the package index"; \
	else \
		echo "No GPU found: installing the CPU build of torch first ($(TORCH_CPU))"; \
		$(PY) -m pip install --quiet $(TORCH_CPU) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)); \
	fi
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/selfevo run

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache *.egg-info
