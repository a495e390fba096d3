# The two commands of the README: `make run` (serve on :8080) and `make test` (the whole suite).
# Every virtualenv is installed from the locks in requirements/, which `make lock` writes from
# pyproject.toml; installing never resolves anything.
PYTHON      ?= python3.11
VENV        := .venv
TOOLS_VENV  := .venv-tools
BIN         := $(VENV)/bin
UV          := $(BIN)/uv
LOCKS       := requirements
PORT        ?= 8080
REDIS_PORT  ?= 6379
SCENARIO    ?= smoke
PYTEST_ARGS ?=
# uv reads neither pip's configuration nor PIP_FIND_LINKS. The CPU build of torch is looked for
# where pip finds it (PIP_FIND_LINKS, else pip's configured find-links), else on PyTorch's CPU
# index page, which lists that wheel.
TORCH_FIND_LINKS ?= $(or $(PIP_FIND_LINKS),$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null),https://download.pytorch.org/whl/cpu/torch/)
TORCH_LINKS = $(foreach location,$(TORCH_FIND_LINKS),--find-links $(location))
# Locks are resolved for the image's platform (linux/amd64, CPython 3.11), which CI shares.
UV_COMPILE  := UV_CUSTOM_COMPILE_COMMAND="make lock" $(UV) pip compile --quiet --generate-hashes \
               --python-version 3.11 --python-platform x86_64-manylinux_2_28 $(LOCK_FLAGS)
# Bytecode is compiled at install: with PYTHONDONTWRITEBYTECODE set, as it may be, every process
# would otherwise compile torch and transformers again on import (about 3 s each).
UV_SYNC     := $(UV) pip sync --quiet --strict --require-hashes --compile-bytecode
BENCHMARK_ARGS ?=

.PHONY: install tools system-deps lock lock-upgrade run test test-fast mutation loadtest benchmark dashboard plan clean

# uv itself, hash-checked, installed by pip into .venv (uv's own sync leaves pip in place).
$(UV): $(LOCKS)/installer.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --quiet --require-hashes --no-deps -r $(LOCKS)/installer.txt
	touch $@

# .venv: the service, the build tools (torch) and the test tools, then the project itself (editable).
install: $(VENV)/.installed
$(VENV)/.installed: $(LOCKS)/test.txt $(LOCKS)/installer.txt pyproject.toml | $(UV)
	$(UV_SYNC) --python $(BIN)/python $(TORCH_LINKS) $(LOCKS)/test.txt $(LOCKS)/installer.txt
	$(UV) pip install --quiet --python $(BIN)/python --no-deps --editable .
	touch $@

# checkov pins versions that clash with the service's own dependencies: it lives in its own venv.
tools: $(TOOLS_VENV)/.installed
$(TOOLS_VENV)/.installed: $(LOCKS)/tools.txt | $(UV)
	test -x $(TOOLS_VENV)/bin/python || $(PYTHON) -m venv --without-pip $(TOOLS_VENV)
	$(UV_SYNC) --python $(TOOLS_VENV)/bin/python $(LOCKS)/tools.txt
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

# The locks, from pyproject.toml. test.txt is resolved first; build.txt and runtime.txt take its
# versions, so the image runs exactly what the tests ran. Existing pins are kept unless a change
# in pyproject.toml needs another version; `make lock-upgrade` moves every pin to the newest release.
lock: | $(UV)
	$(UV_COMPILE) $(TORCH_LINKS) pyproject.toml --extra build --extra test -o $(LOCKS)/test.txt
	$(UV_COMPILE) $(TORCH_LINKS) pyproject.toml --extra build -c $(LOCKS)/test.txt -o $(LOCKS)/build.txt
	$(UV_COMPILE) pyproject.toml -c $(LOCKS)/test.txt -o $(LOCKS)/runtime.txt
	$(UV_COMPILE) --group pyproject.toml:tools -o $(LOCKS)/tools.txt
	$(UV_COMPILE) --group pyproject.toml:installer -o $(LOCKS)/installer.txt

lock-upgrade: LOCK_FLAGS := --upgrade
lock-upgrade: lock

# Gunicorn on PORT, with a Redis of its own on REDIS_PORT unless REDIS_URL is given. Both stop on
# Ctrl-C and when make is signalled from another shell. make passes SIGTERM on to this recipe but
# not SIGINT (a terminal sends that to every process itself): make then only waits for the recipe,
# no longer catching the signal it got, and the watcher below sees that in its signal mask.
run: install
	@set -e; mkdir -p .run; make_pid=$$PPID; redis_pid=; \
	if [ -z "$$REDIS_URL" ]; then \
	  $(BIN)/redis-server --port $(REDIS_PORT) --bind 127.0.0.1 --save '' --appendonly no \
	    --pidfile $(CURDIR)/.run/redis-$(REDIS_PORT).pid --logfile $(CURDIR)/.run/redis-$(REDIS_PORT).log & redis_pid=$$!; \
	  until $(BIN)/redis-cli -p $(REDIS_PORT) ping >/dev/null 2>&1; do \
	    kill -0 $$redis_pid 2>/dev/null || { echo "redis-server could not start on port $(REDIS_PORT) (see .run/redis-$(REDIS_PORT).log): set REDIS_PORT or REDIS_URL" >&2; exit 1; }; \
	    sleep 0.1; \
	  done; \
	  export REDIS_URL=redis://127.0.0.1:$(REDIS_PORT)/0; \
	fi; \
	PORT=$(PORT) $(BIN)/gunicorn -c gunicorn.conf.py app:app & service=$$!; \
	trap 'kill -TERM $$service 2>/dev/null || true' INT TERM HUP; \
	( signals() { sed -n 's/^SigCgt:[[:space:]]*//p' /proc/$$make_pid/status 2>/dev/null || true; }; \
	  caught=$$(signals); \
	  while kill -0 $$make_pid 2>/dev/null && [ "$$(signals)" = "$$caught" ]; do sleep 0.5; done; \
	  kill -TERM $$service 2>/dev/null || true ) & watcher=$$!; \
	status=0; wait $$service || status=$$?; \
	while kill -0 $$service 2>/dev/null; do status=0; wait $$service || status=$$?; done; \
	kill $$watcher 2>/dev/null || true; \
	if [ -n "$$redis_pid" ]; then \
	  kill -TERM $$redis_pid 2>/dev/null || true; \
	  while kill -0 $$redis_pid 2>/dev/null; do sleep 0.1; done; \
	fi; \
	exit $$status

# Set-up (both virtualenvs, Prometheus) and the suite, each timed.
test:
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory install tools system-deps || exit $$?; \
	ready=$$(date +%s); status=0; \
	$(BIN)/python -m pytest $(PYTEST_ARGS) || status=$$?; \
	end=$$(date +%s); \
	echo "make test: set-up $$(((ready - start) / 60)) min $$(((ready - start) % 60)) s, tests $$(((end - ready) / 60)) min $$(((end - ready) % 60)) s"; \
	exit $$status

test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# mutmut over the serving core against the fast tests ([tool.mutmut] in pyproject.toml), then the
# kill rate per file. `.venv/bin/mutmut results` lists the survivors, `mutmut show NAME` shows one.
mutation: install
	rm -rf mutants
	$(BIN)/mutmut run --max-children $(or $(MUTATION_CHILDREN),$(shell nproc))
	$(BIN)/python tests/mutation_rates.py

# Against the service `make run` serves on PORT, unless MODEL_DIR or BASE_URL is set (k6/run.sh).
loadtest: install
	PORT=$(PORT) k6/run.sh $(SCENARIO)

# Hot cache against the minimal Flask handler and the seed-style app, HTTP against the engine,
# open loop, bulk, start-up and memory: printed figures and ratios, no verdict.
benchmark: install
	$(BIN)/python k6/benchmark.py $(BENCHMARK_ARGS)

# Regenerate the Grafana dashboard JSON after changing observability/dashboard.py.
dashboard: install
	$(BIN)/python observability/dashboard.py

# Capacity planner (docs/planner.md): the cheapest autoscaling settings for a traffic shape and a p99
# objective, simulated from the committed pod profile; writes build/plan/autoscaling.patch.yaml + .png.
PLAN_TRAFFIC ?= diurnal:low=0,peak=200,period=3600,duration=3600+burst:rate=150,idle=2400,length=120
PLAN_SLO_P99_MS ?= 500
plan: install
	$(BIN)/python -m knative.plan recommend --traffic "$(PLAN_TRAFFIC)" --slo-p99-ms $(PLAN_SLO_P99_MS) \
	  --patch build/plan/autoscaling.patch.yaml

clean:
	rm -rf $(VENV) $(TOOLS_VENV) .run .pytest_cache k6/results mutants
