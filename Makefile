# Two commands on a fresh machine: `make demo` (set up + run the bundled demo) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch must be installed before anything that depends on torch, or pip pulls a CUDA build.
TORCH_SRC := $(if $(wildcard /opt/wheels/torch-2.13.0*),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu)

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SRC) "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: setup
	$(VENV)/bin/armtwin demo --out demo-out

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check armtwin device server twin firmware_interfaces lab viewer tests bench tools
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) demo-out .pytest_cache .mypy_cache .ruff_cache
