# Two commands do all the set-up on a fresh machine:
#   make demo   -> installs into .venv, runs `densefeat demo`
#   make test   -> installs into .venv (with dev extras), runs ruff and the test suite
# A GPU user installs the CUDA torch build into .venv first (or passes TORCH=torch);
# where no torch is importable we install the CPU build pinned below.
VENV  ?= .venv
PY    := $(VENV)/bin/python
TORCH ?= torch==2.13.0

.PHONY: install browser demo test lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,text,eval]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/densefeat demo

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

# The report's page test opens it in headless Chromium (Debian's package). Installed here when
# missing and we may (root); otherwise that test is skipped outside CI and fails under CI.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && (apt-get install -y -q chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium >/dev/null)) \
	  || echo "chromium not installed: the report's browser test will be skipped"; }

test: install lint browser
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
