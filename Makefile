# zonegate: the two commands of the README, and a few helpers.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test install install-demo install-test lint bench clean

# `make demo` installs only what the demo needs; `make test` adds the test peers and
# tools. scripts/bootstrap.sh says what each installs (README: "What gets installed").
demo: install-demo
	$(PY) -m zonegate demo

test: install-test
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(PY) -m pytest -q

install-demo:
	@VENV=$(VENV) ./scripts/bootstrap.sh demo

install-test install:
	@VENV=$(VENV) ./scripts/bootstrap.sh test

lint: install-test
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

bench: install-test
	$(PY) bench/lb_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build src/*.egg-info
