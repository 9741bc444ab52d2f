# Two commands on a fresh machine:  `make demo`  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-clock test test-fast bench services clean

$(STAMP): pyproject.toml
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

## the whole suite (starts PostgreSQL, MariaDB and Redis when they are down)
test: $(STAMP) services
	$(PY) -m pytest -q -p no:cacheprovider

## the suite without tests that need servers
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not postgres and not mysql and not redis and not slow and not drill"

## benchmarks against truthound 3.2.0 (installed into .bench-venv only)
bench: $(STAMP) services
	$(PY) bench/run.py

services:
	@scripts/services.sh

clean:
	rm -rf $(VENV) .bench-venv .demo .pytest_cache build *.egg-info
