# zonegate: the two commands of the README, and a few helpers.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test install lint bench clean

demo: install
	$(PY) -m zonegate demo

test: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(PY) -m pytest -q

install:
	@./scripts/bootstrap.sh

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

bench: install
	$(PY) bench/lb_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build src/*.egg-info
