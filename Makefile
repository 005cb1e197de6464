# The two commands a new user runs: `make run` (demo site) and `make test` (whole suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000
SIM_PORT ?= 8765
PG_TEST_URL ?= postgres://postgres@127.0.0.1:5432/test

.PHONY: run cluster test test-sqlite test-sqlite-once test-sqlite-rest test-postgres test-cluster install lint wheel clean bench bench-quick

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $(STAMP)

# Serves the demo on http://$(HOST):$(PORT)/chat/ with Daphne (orchat_site/run.py): migrates,
# makes the demo logins, and without OPENROUTER_API_KEY starts the local OpenRouter simulator on
# $(SIM_PORT) first, stores its demo key and enables its models. Ctrl-C, SIGTERM or SIGHUP (to
# make or its whole process group) stops every process it started.
run: install
	exec $(PY) -m orchat_site.run --host $(HOST) --port $(PORT) --sim-port $(SIM_PORT)

# The demo as docs/deploy.md runs it: nginx (deploy/nginx.conf, its own process, on $(PORT)) in
# front of two Daphne workers (8001, 8002) on this machine's PostgreSQL (database
# streamchat_cluster, created if missing, migrated) and Redis, plus the simulator when
# OPENROUTER_API_KEY is not set. In the foreground; Ctrl-C or SIGTERM drains the workers and
# stops everything. Needs nginx (apt-get install nginx), PostgreSQL and Redis on loopback.
cluster: install
	PORT=$(PORT) SIM_PORT=$(SIM_PORT) $(PY) -m tests.cluster

# Lint, then the suite in three runs at once: on SQLite the browser and once-only tests, on
# SQLite the rest, and (everything that touches the ORM) on PostgreSQL. They share nothing (a
# test database each, named by process; Redis databases 15, 12 and 13; free ports), and most of
# their time is spent waiting on servers, so CI waits for the longest, not the sum. Then, alone,
# the cluster tests (nginx, two workers, restarts and cuts): their drains and lease timings are
# what they test, so they get the machine to themselves. Each run's output is printed when all
# ended (and kept in test-artifacts/). SERIAL=1: one after the other.
RUNS := sqlite-once sqlite-rest postgres
CLUSTER_TESTS := tests/test_cluster.py

test: install
	$(MAKE) --no-print-directory lint
	@if [ -n "$(SERIAL)" ]; then \
	  $(MAKE) --no-print-directory test-sqlite && $(MAKE) --no-print-directory test-postgres; \
	  exit $$?; \
	fi; \
	mkdir -p test-artifacts; \
	for run in $(RUNS); do \
	  ( $(MAKE) --no-print-directory test-$$run > test-artifacts/$$run-run.log 2>&1; \
	    echo $$? > test-artifacts/$$run-run.status ) & \
	done; \
	wait; \
	failed=0; \
	for run in $(RUNS); do \
	  echo "== $$run run =="; cat test-artifacts/$$run-run.log; \
	done; \
	echo "== cluster run (alone) =="; \
	$(MAKE) --no-print-directory test-cluster; cluster_status=$$?; \
	for run in $(RUNS); do \
	  status=$$(cat test-artifacts/$$run-run.status); echo "$$run run: exit $$status"; \
	  [ "$$status" = 0 ] || failed=1; \
	done; \
	echo "cluster run: exit $$cluster_status"; [ $$cluster_status = 0 ] || failed=1; \
	exit $$failed

test-sqlite-once:
	TEST_REDIS_URL=redis://127.0.0.1:6379/15 $(PY) -m pytest -m "browser or once" \
	  $(addprefix --ignore=,$(CLUSTER_TESTS))

test-cluster:
	TEST_REDIS_URL=redis://127.0.0.1:6379/15 $(PY) -m pytest $(CLUSTER_TESTS)

test-sqlite-rest:
	TEST_REDIS_URL=redis://127.0.0.1:6379/12 $(PY) -m pytest -m "not browser and not once"

test-sqlite:
	$(PY) -m pytest

test-postgres:
	@if [ -n "$$CI" ] || $(PY) -c "import socket; socket.create_connection(('127.0.0.1', 5432), 1)" 2>/dev/null; then \
	  echo "== PostgreSQL run ($(PG_TEST_URL)) =="; \
	  DATABASE_URL=$(PG_TEST_URL) TEST_REDIS_URL=redis://127.0.0.1:6379/13 \
	    $(PY) -m pytest -m "not browser and not once"; \
	else \
	  echo "SKIPPED the PostgreSQL run: nothing listens on 127.0.0.1:5432 (CI runs it)."; \
	fi

# ruff and mypy on the app (their settings are in pyproject.toml).
lint: install
	$(PY) -m ruff check streamchat orchat_site
	$(PY) -m mypy

wheel: install
	$(PY) -m pip wheel -q --no-deps -w dist .

# The load benchmark (docs/benchmark.md): streamchat against a bare relay and the upstream itself,
# C = 1 to 1000 on SQLite and PostgreSQL, under 10 minutes; writes bench/results/latest.{json,md}.
bench: install
	$(PY) -m bench

# The same in under a minute: C = 5, SQLite, 20-token replies (tests/test_bench.py runs it);
# writes bench/results/quick/ (not committed).
bench-quick: install
	$(PY) -m bench --quick

clean:
	rm -rf $(VENV) dist build *.egg-info test-artifacts
