# lexprobe: `make run` sets up and runs the main job on the organism (ending with the HTML report); `make test`
# sets up and runs the tests; `make lab` opens JupyterLab on the notebooks; `make report` writes the report only.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lexprobe-installed
CHROMIUM_LOG := $(VENV)/chromium-install.log
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

# Quiet setup, real problems still shown. The machine's pip.conf adds local file:// mirrors as extra indexes, and pip
# then warns "Location ... is ignored" for every package a mirror lacks: drop exactly that line (pipefail keeps pip's
# exit status). setuptools warns that an editable install is editable: ignore exactly that warning.
PIP_NOISE := 2>&1 | { grep -v "^WARNING: Location 'file:.*' is ignored: it is neither a file nor a directory\.$$" || true; }

.PHONY: setup run report test lab chromium bench lock clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@echo "setting up $(VENV) from requirements.lock"
	$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet pip==26.3 $(PIP_NOISE)
	@$(PY) -m pip install --quiet -r requirements.lock $(PIP_NOISE)
	@PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install --quiet --no-deps --no-build-isolation -e . \
		$(PIP_NOISE)
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (lexprobe)" >/dev/null
	@touch $@

run: setup
	$(VENV)/bin/lexprobe run

# All five stages on the organism (run or reused from the cache) in one self-contained HTML file.
report: setup
	$(VENV)/bin/lexprobe report --suite organism

test: setup chromium
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	LEXPROBE_SMOKE=1 $(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env \
		--sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider --durations=15

# JupyterLab on notebooks/ with the project's python3 kernel, offline; e.g. make lab LAB_ARGS="--port=8899 --no-browser"
lab: setup
	$(PY) -m lexprobe.lab $(LAB_ARGS)

# Debian's Chromium for tests/browser (Playwright drives it: its own browser download is not reachable). Installed
# with apt-get when missing and we are root; otherwise the browser tests are skipped and say why.
chromium:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser tests (apt-get; log: $(CHROMIUM_LOG))"; \
	    mkdir -p $(VENV); \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      chromium; } >$(CHROMIUM_LOG) 2>&1 \
	      || { echo "chromium could not be installed, the browser tests will be skipped:"; tail -n 5 $(CHROMIUM_LOG); }; \
	  else echo "chromium is missing and we are not root: the browser tests will be skipped"; fi; }

bench: setup
	$(PY) benchmarks/extract_speed.py

# Regenerate the pinned lock (and environment.yml) from the ranges in pyproject.toml.
lock:
	rm -rf /tmp/lexprobe-lock && $(PYTHON) -m venv /tmp/lexprobe-lock
	/tmp/lexprobe-lock/bin/python -m pip install --quiet -e . $(PIP_NOISE)
	/tmp/lexprobe-lock/bin/python -m pip freeze --all --exclude-editable | grep -v '^pip==' | sed 's/+cpu$$//' > requirements.lock
	$(PYTHON) tools/write_environment.py

clean:
	rm -rf $(VENV) .lexprobe build
