# The two commands: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: run test test-fast dev lint typecheck pytest bench wrk demo migrate lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The runtime is exactly what requirements.txt pins (the lock, with the project itself as
# `-e .`), installed without resolving anything: what runs here is what Heroku installs.
$(VENV)/.installed: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --no-deps -r requirements.txt
	@touch $@

# Dev, demo and bench tools go on top; packages already pinned by the lock are left as they are.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	@touch $@

$(VENV)/.installed-demo: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[demo]"
	@touch $@

## dev: install the dev and demo tools (all that `make test` and `make demo` use); runs nothing
dev: $(VENV)/.installed-dev $(VENV)/.installed-demo

## lock: compile requirements.txt from pyproject.toml's runtime dependencies (needs PyPI);
## pins already in it are kept, `make lock LOCK_ARGS=--upgrade` moves every pin to the newest.
lock: $(VENV)/.installed-dev
	$(BIN)/uv pip compile requirements.in -o requirements.txt --universal \
		--python-version $$(cat .python-version) --quiet $(LOCK_ARGS)

## run: migrate the default SQLite database and start the web process as the Procfile does;
## its second line is what another shell exports for `jobhooks` to match (webhook URLs on $PORT)
run: $(VENV)/.installed
	@echo "jobhooks: APP_ENV=$${APP_ENV:-development} (development defaults unless you set APP_ENV=production)"
	@echo "jobhooks: in another shell: export APP_ENV=$${APP_ENV:-development} PORT=$${PORT:-8000}$${PUBLIC_URL:+ PUBLIC_URL=$$PUBLIC_URL}$${DATABASE_URL:+  # and DATABASE_URL as set here}"
	APP_ENV=$${APP_ENV:-development} jobhooks db upgrade
	APP_ENV=$${APP_ENV:-development} sh -c "$$(sed -n 's/^web: *//p' Procfile)"

## migrate: apply migrations to DATABASE_URL (default: the SQLite file under instance/)
migrate: $(VENV)/.installed
	APP_ENV=$${APP_ENV:-development} jobhooks db upgrade

## test: lint, type-check and run the test suite (PostgreSQL too when TEST_DATABASE_URL is set)
test: lint typecheck pytest

lint: $(VENV)/.installed-dev
	ruff check .
	ruff format --check .

typecheck: $(VENV)/.installed-dev
	mypy

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
pytest: $(VENV)/.installed-dev
	@pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

## test-fast: only tests/unit (in-process), less the tests marked slow, on both cores; no lint,
## no typecheck
# No unit test uses schemathesis' or anyio's pytest plugins (tests/process does): not loading
# them spares each of the three pytest processes about 0.6 s of imports.
test-fast: $(VENV)/.installed-dev
	@pytest tests/unit -m "not slow" -n 2 -p no:schemathesis -p no:anyio $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

## demo: the whole loop offline: receiver, a local ittybit stand-in with faulty webhooks, reconcile,
## and the notifications a local application receives
demo: $(VENV)/.installed-demo
	$(BIN)/python -m devtools.demo $(DEMO_ARGS)

## bench: webhook throughput vs the raw-driver reference, reconcile, notify, API, admin (not in make test);
## PostgreSQL too when TEST_DATABASE_URL names a server (in a database of its own). See bench/README.md.
bench: $(VENV)/.installed-bench
	@command -v wrk >/dev/null 2>&1 || $(MAKE) --no-print-directory wrk || \
		echo "bench: wrk is not available; the Python load generator stands in (slower)"
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# wrk comes from Debian's packages; installing needs root (or passwordless sudo).
wrk:
	@if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	else echo "bench: cannot install wrk without root" >&2; exit 1; fi; \
	$$SUDO apt-get install -y -qq wrk >/dev/null 2>&1 || \
	{ $$SUDO apt-get update -qq >/dev/null && $$SUDO apt-get install -y -qq wrk >/dev/null; }

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache .mypy_cache
