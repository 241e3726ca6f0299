# feedserver: `make run` and `make test` work as the first command on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JS_TESTS := tests/js/node_modules/.package-lock.json
WEB_DEPS := web/node_modules/.package-lock.json
# System packages the tests use for real (Debian names); installed only when absent.
SYSTEM_TOOLS := redis-server:redis-server nginx:nginx chromium:chromium
PYTEST_ARGS ?=

.PHONY: install sysdeps run dev test lint format coverage clean screenshot bench cluster audit

install: $(STAMP) $(JS_TESTS) $(WEB_DEPS)

$(STAMP): pyproject.toml
	@echo ">> creating $(VENV) and installing feedserver with its dev extra"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(JS_TESTS): tests/js/package-lock.json
	@echo ">> installing the socket.io JS client for the interoperability tests"
	npm ci --silent --no-audit --no-fund --prefix tests/js
	touch $@

$(WEB_DEPS): $(wildcard web/package-lock.json)
	@if [ -f web/package-lock.json ]; then \
	  echo ">> installing the page's socket.io client"; \
	  npm ci --silent --no-audit --no-fund --prefix web && touch $@; \
	fi

# /usr/sbin (nginx) is not on a normal user's PATH on Debian: look there too.
sysdeps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  tool=$${pair%%:*}; pkg=$${pair##*:}; \
	  PATH="$$PATH:/usr/sbin:/sbin" command -v $$tool >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo ">> installing system packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@# Autobahn|Testsuite (tests/conformance) runs on Python 2.7 only: pyenv's, if it has none.
	@if [ -z "$$AUTOBAHN_PYTHON" ] && ! command -v python2.7 >/dev/null 2>&1 \
	    && command -v pyenv >/dev/null 2>&1 && ! pyenv prefix 2.7.18 >/dev/null 2>&1; then \
	  echo ">> installing Python 2.7.18 with pyenv (for Autobahn|Testsuite)"; pyenv install -s 2.7.18; \
	fi

run: install
	$(BIN)/feedserver serve

dev: install
	$(BIN)/watchfiles --target-type command "$(BIN)/feedserver serve" feedserver web

# Without coverage: measuring every line (and every child process) makes the run about
# 40 % longer; `make coverage` is the same run, measured.
test: install sysdeps
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# On every save of a .py file under feedserver/ or tests/, reruns the tests the change
# affects: pytest-testmon keeps which code each test ran (.testmondata; the first run is
# all of PYTEST_ARGS, the whole suite by default). A test whose server is a child process
# (tests/e2e, the CLI tests) reruns when its own file changes, not the server's code.
.PHONY: test-watch
test-watch: install sysdeps
	$(BIN)/watchfiles --filter python --target-type command \
	  "$(BIN)/python -m pytest -q --testmon $(PYTEST_ARGS)" feedserver tests

coverage: install sysdeps
	$(BIN)/python -m pytest -q -p no:cacheprovider --cov=feedserver --cov-report=term-missing --cov-fail-under=85 $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check feedserver tests bench
	$(BIN)/ruff format --check feedserver tests bench
	$(BIN)/mypy feedserver tests bench

format: install
	$(BIN)/ruff format feedserver tests bench
	$(BIN)/ruff check --fix feedserver tests bench

# Benchmarks, feedserver against the Node original in the same run (minutes; wants a
# quiet machine): copies $(SHARED)/bench and $(SHARED)/reference-node to a temporary
# directory, npm ci there, writes docs/benchmarks.md. Not part of `make test`.
SHARED ?= ../shared
bench: install
	@command -v wrk >/dev/null || $(MAKE) --no-print-directory sysdeps SYSTEM_TOOLS="wrk:wrk"
	$(BIN)/python bench/run_benchmarks.py --shared $(SHARED) $(BENCH_ARGS)

# The docker-compose topology without Docker: redis-server (AOF), two nodes and nginx on
# loopback ports (deploy/cluster.sh; docs/scaling.md). CLUSTER_REDIS=cluster: a Redis
# Cluster of three masters instead of one redis-server. Ctrl-C stops all.
CLUSTER_REDIS ?= single
cluster: install
	@$(MAKE) --no-print-directory sysdeps SYSTEM_TOOLS="redis-server:redis-server nginx:nginx curl:curl"
	CLUSTER_REDIS=$(CLUSTER_REDIS) deploy/cluster.sh

# Python packages, then the npm packages the page ships to browsers. --strict: a package
# that could not be checked (no vulnerability service reachable) fails the audit instead of
# being skipped under "No known vulnerabilities found".
screenshot: install sysdeps
	$(BIN)/python -m tests.e2e.screenshot docs/screenshot.png

audit: install
	@$(BIN)/pip-audit --skip-editable --strict --progress-spinner off || { \
	  echo "make audit: FAILED: pip-audit found a vulnerability or could not reach its" \
	       "vulnerability service (PyPI's JSON API or OSV); see docs/security.md" >&2; \
	  exit 1; }
	@npm audit --omit=dev --prefix web || { \
	  echo "make audit: FAILED: npm audit found a vulnerability or the registry's audit" \
	       "endpoint did not answer; see docs/security.md" >&2; \
	  exit 1; }

# The official Engine.IO and Socket.IO suites (mocha, from $(SHARED)/conformance,
# copied to .cache/conformance) and Autobahn|Testsuite's fuzzing client (Python 2.7 from
# pyenv: `pyenv install 2.7.18`, or AUTOBAHN_PYTHON=...) against the test-only apps in
# tests/conformance; each prints its own summary. CONFORMANCE_ARGS="--stack stock" compares.
.PHONY: conformance
conformance: install
	CONFORMANCE_SUITES=$(SHARED)/conformance $(BIN)/python -m tests.conformance $(CONFORMANCE_ARGS)

# The Socket.IO interoperability tests (JS clients of each version, python-socketio's client)
# on other releases of the libraries, so that an upgrade is a run, not an event: each set is
# comma-separated pins, installed over pyproject's ranges in its own venv under .cache/compat
# (kept between runs). Lowest, middle and newest python-socketio; aiohttp's lowest and newest
# that pass (docs/testing.md#compatibility).
COMPAT_SETS ?= python-socketio==5.16.0,aiohttp==3.14.0 \
	python-socketio==5.17.1 \
	python-socketio==5.18.1,aiohttp==3.14.5
.PHONY: compat
compat: $(JS_TESTS)
	$(PYTHON) -m tests.compat $(COMPAT_SETS)

clean:
	rm -rf $(VENV) tests/js/node_modules web/node_modules .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov .cluster
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
