# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint venv bench clean

# The runtime alone for the demo; the test extra (pytest, mypy, ruff...) only for lint/test.
# PYTHONWARNINGS=ignore: setuptools prints an "Editable installation" banner for -e installs;
# the demo's first screen should be the app, not that.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	PYTHONWARNINGS=ignore $(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	PYTHONWARNINGS=ignore $(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(PY) -m khotui --demo

# Static checks first (seconds), then the tests: strict mypy and ruff, configured in pyproject.
lint: venv
	$(VENV)/bin/mypy
	$(VENV)/bin/ruff check khotui tests bench screenshots

test: lint
	$(PY) -m pytest -q

bench: venv
	$(PY) bench/cli_plan.py && $(PY) bench/scale.py

clean:
	rm -rf $(VENV) build *.egg-info
