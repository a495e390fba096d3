# The two commands of the README: `make run` (serve on :8080) and `make test` (the whole suite).
PYTHON      ?= python3.11
VENV        := .venv
TOOLS_VENV  := .venv-tools
BIN         := $(VENV)/bin
PORT        ?= 8080
REDIS_PORT  ?= 6379
SCENARIO    ?= smoke
PYTEST_ARGS ?=

.PHONY: install tools system-deps run test test-fast loadtest benchmark dashboard clean

install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned in the build extra; its CPU wheel comes from the configured index or local wheels
	$(BIN)/pip install --quiet -e ".[build,test]"
	touch $@

# checkov pins versions that clash with the service's own dependencies: it lives in its own venv.
tools: $(TOOLS_VENV)/.installed
$(TOOLS_VENV)/.installed:
	test -x $(TOOLS_VENV)/bin/python || $(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install --quiet --upgrade pip
	$(TOOLS_VENV)/bin/pip install --quiet "checkov>=3.2,<4"
	touch $@

# Prometheus (for the observability proof) comes from Debian; needs root and apt.
system-deps:
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then \
	  echo "prometheus: present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; \
	else \
	  echo "prometheus not installed and no root/apt: the Prometheus tests will be skipped"; \
	fi

run: install
	@set -e; mkdir -p .run; \
	if [ -z "$$REDIS_URL" ]; then \
	  $(BIN)/redis-server --port $(REDIS_PORT) --bind 127.0.0.1 --save '' --appendonly no \
	    --daemonize yes --pidfile $(CURDIR)/.run/redis.pid --logfile $(CURDIR)/.run/redis.log; \
	  tries=0; until $(BIN)/redis-cli -p $(REDIS_PORT) ping >/dev/null 2>&1; do \
	    tries=$$((tries + 1)); [ $$tries -lt 50 ] || { echo "redis did not start on port $(REDIS_PORT): see .run/redis.log"; exit 1; }; \
	    sleep 0.1; \
	  done; \
	  export REDIS_URL=redis://127.0.0.1:$(REDIS_PORT)/0; \
	  trap 'kill $$(cat .run/redis.pid) 2>/dev/null || true' EXIT INT TERM; \
	fi; \
	PORT=$(PORT) $(BIN)/gunicorn -c gunicorn.conf.py app:app || [ $$? -eq 1 ]  # 1: a failed start, said in one line

test: install tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

loadtest: install
	k6/run.sh $(SCENARIO)

# Naive vs shipped over HTTP, HTTP vs engine, start-up and memory: printed figures, no verdict.
benchmark: install
	$(BIN)/python k6/benchmark.py

# Regenerate the Grafana dashboard JSON after changing observability/dashboard.py.
dashboard: install
	$(BIN)/python observability/dashboard.py

clean:
	rm -rf $(VENV) $(TOOLS_VENV) .run .pytest_cache k6/results
