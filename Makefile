# Two commands on a fresh machine:  `make demo`  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-clock test test-fast test-versions docs bench services browser clean

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv
	$(VENV)/bin/uv pip install --quiet --python $(PY) -e ".[test]"
	touch $(STAMP)

## a real local Airflow (SQLite) with the example DAGs: a task fails, its escalation climbs
demo: $(STAMP)
	$(PY) -m airflow_escalation.demo

## the spec's complete example on a fake clock, without starting Airflow
demo-clock: $(STAMP)
	$(PY) -m airflow_escalation.demo.fake_clock

## the whole suite (starts PostgreSQL, MariaDB and Redis when they are down; installs Chromium
## for the browser tests when it is missing and it may)
test: $(STAMP) services browser
	$(PY) -m pytest -q -p no:cacheprovider

## the built wheel on the floor Airflow and the newest 3.x, each in its own venv: a smoke subset
test-versions: $(STAMP)
	UV=$(VENV)/bin/uv scripts/test_airflow_versions.sh

## the documentation site in site/ (reference pages generated; every internal link checked)
docs: $(STAMP)
	$(PY) scripts/docs_reference.py
	$(VENV)/bin/mkdocs build --strict

## the suite without tests that need servers
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not postgres and not mysql and not redis and not slow and not drill"

## every benchmark, one table: lifecycles against truthound 3.2.0 (installed into .bench-venv only),
## PostgreSQL/MySQL with one and three engine processes, queries at 100,000 records, timer lateness
bench: $(STAMP) services
	$(PY) bench/all.py

services:
	@scripts/services.sh

browser:
	@scripts/browser.sh

clean:
	rm -rf $(VENV) .bench-venv .compat .demo .pytest_cache build site *.egg-info
