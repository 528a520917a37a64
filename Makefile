# lexprobe: `make run` sets up and runs the main job on the organism (ending with the HTML report);
# `make test` sets up and runs the tests; `make report` writes the report only.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lexprobe-installed

.PHONY: setup run report test bench lock clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet pip==26.3
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (lexprobe)" >/dev/null
	touch $@

run: setup
	$(VENV)/bin/lexprobe run

# All five stages on the organism (run or reused from the cache) in one self-contained HTML file.
report: setup
	$(VENV)/bin/lexprobe report --suite organism

test: setup
	LEXPROBE_SMOKE=1 $(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env \
		--sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

bench: setup
	$(PY) benchmarks/extract_speed.py

# Regenerate the pinned lock (and environment.yml) from the ranges in pyproject.toml.
lock:
	rm -rf /tmp/lexprobe-lock && $(PYTHON) -m venv /tmp/lexprobe-lock
	/tmp/lexprobe-lock/bin/python -m pip install --quiet -e .
	/tmp/lexprobe-lock/bin/python -m pip freeze --all --exclude-editable | grep -v '^pip==' | sed 's/+cpu$$//' > requirements.lock
	$(PYTHON) tools/write_environment.py

clean:
	rm -rf $(VENV) .lexprobe
