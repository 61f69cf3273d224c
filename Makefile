# Two commands for a fresh machine: `make demo` and `make test`.
# ansible-core (the fleet tests, tests/test_fleet*.py) needs Python >= 3.12 on the controller, so
# the venv is made with the first Python >= 3.12 found: python3.13, python3.12, pyenv's installed
# versions (pyenv's shims answer only for the active version), else python3; under an older one
# the Ansible tests skip with that reason. `make PYTHON=...` overrides; `make print-python` shows it.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell for p in python3.13 python3.12 \
	$$(ls -d "$$(pyenv root 2>/dev/null || echo /nonexistent)"/versions/3.*/bin/python3 2>/dev/null | sort -rV) \
	python3; do "$$p" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1 \
	&& { echo "$$p"; exit 0; }; done; echo python3)
endif
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint venv bench clean print-python

# The runtime alone for the demo; the test extra (pytest, mypy, ruff...) only for lint/test.
# PYTHONWARNINGS=ignore: setuptools prints an "Editable installation" banner for -e installs;
# the demo's first screen should be the app, not that.
# A venv made by another Python version (an older checkout's python3) is remade, not patched.
PYVER := import sys; print("%d.%d" % sys.version_info[:2])
$(VENV)/.installed: pyproject.toml
	@if [ -x $(PY) ] && [ "$$($(PY) -c '$(PYVER)')" != "$$($(PYTHON) -c '$(PYVER)')" ]; then \
		echo "make: $(VENV) is Python $$($(PY) -c '$(PYVER)'), remaking it with $(PYTHON)"; \
		rm -rf $(VENV); fi
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
	$(VENV)/bin/ruff check khotui tests bench screenshots ansible

test: lint
	$(PY) -m pytest -q

bench: venv
	$(PY) bench/cli_plan.py && $(PY) bench/scale.py

print-python:
	@echo "$(PYTHON) $$($(PYTHON) -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"

clean:
	rm -rf $(VENV) build *.egg-info
