# Two commands do all the set-up on a fresh machine:
#   make demo   -> installs into .venv, runs `densefeat demo`
#   make test   -> installs into .venv (with dev extras), runs ruff and the test suite
# A GPU user installs the CUDA torch build into .venv first (or passes TORCH=torch);
# where no torch is importable we install the CPU build pinned below.
VENV  ?= .venv
PY    := $(VENV)/bin/python
TORCH ?= torch==2.13.0

.PHONY: install demo test lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,text]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/densefeat demo

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

test: install lint
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
