# drivediff: two set-up-and-go commands, `make demo` and `make test` (see README.md).
# Each creates .venv on first use and installs what it needs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch is installed before the package so that `torch>=2.1` is already satisfied and
# pip never pulls a multi-GB CUDA build. A torch that is already importable in $(VENV) (a GPU build, say)
# is kept. Elsewhere: make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
STAMP := $(VENV)/.drivediff-installed

export NUMBA_CACHE_DIR := $(CURDIR)/.numba_cache
export DRIVEDIFF_CACHE_DIR := $(CURDIR)/.cache/drivediff
export SDL_VIDEODRIVER ?= dummy
export SDL_AUDIODRIVER ?= dummy
export MPLBACKEND ?= Agg
export PYGAME_HIDE_SUPPORT_PROMPT := 1

.PHONY: install demo test test-slow test-all lint bench clean-cache

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -c "import torch" 2>/dev/null || \
		$(PY) -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/drivediff demo

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -n 2 --dist loadfile

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow -n 2 --dist loadfile

test-all: test test-slow

lint: $(STAMP)
	$(VENV)/bin/ruff check drivediff scenarios agents render experiments tests

bench: $(STAMP)
	$(VENV)/bin/drivediff bench sim

clean-cache:
	rm -rf $(NUMBA_CACHE_DIR) $(DRIVEDIFF_CACHE_DIR)
