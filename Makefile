# Two commands do everything on a fresh machine with Python 3.11+: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 1
# Addresses of reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed, as
# uvicorn's --forwarded-allow-ips takes them. Empty: proxy headers are ignored, so a client
# cannot choose the address that rate limits and audit events see.
FORWARDED_ALLOW_IPS ?=

.PHONY: run test fuzz lint install clean bench faults lock docs docs-serve

# Installs come from the lock files in requirements/: exact versions with their hashes, so every
# machine and the image get the same packages, and a changed file on the index fails the install.
# pyproject.toml keeps the ranges (`pip install .` resolves those). The service itself is then
# installed editable without dependencies: the lock already holds them all.
#   requirements/runtime.txt  pyproject's dependencies: what serving needs (the Dockerfile's)
#   requirements/dev.txt      runtime + the dev extra (tests, lint)
#   requirements/fuzz.txt     dev + the fuzz extra
#   requirements/docs.txt     runtime + the docs extra (MkDocs Material), agreeing with fuzz.txt
# Each lock's pins agree with the next larger one's. After changing any dependency in
# pyproject.toml, run `make lock` and commit requirements/ with the change: tests/test_lockfile.py
# fails until the locks match pyproject.toml again. `make lock UPGRADE=1` moves every pin to the
# newest release the ranges allow. See docs/dependencies.md.
RUNTIME_LOCK := requirements/runtime.txt
DEV_LOCK := requirements/dev.txt
FUZZ_LOCK := requirements/fuzz.txt
DOCS_LOCK := requirements/docs.txt
PIP_LOCKED := $(BIN)/python -m pip install --quiet --require-hashes --no-deps -r

# Two stages, each brought up to date when pyproject.toml or its lock changes: `make run` needs
# only what serving needs (the runtime lock, as in the image); `make test` adds the dev extra
# (pytest, ruff, Playwright: most of the download) on top of the same venv.
$(BIN)/.installed-runtime: pyproject.toml $(RUNTIME_LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
		echo "make: could not create $(VENV): install Python's venv module (Debian/Ubuntu: apt install python3-venv)" >&2; exit 1; }
	$(PIP_LOCKED) $(RUNTIME_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $@

$(BIN)/.installed: $(BIN)/.installed-runtime $(DEV_LOCK)
	$(PIP_LOCKED) $(DEV_LOCK)
	@touch $@

install: $(BIN)/.installed

# `python -m app serve` checks the configuration, the port and the database first, each
# mistake in one line, migrates once, then serves with uvicorn in the log format of app/logs.py.
run: $(BIN)/.installed-runtime
	@$(BIN)/python -m app serve --host $(HOST) --port $(PORT) --workers $(WORKERS) \
		--forwarded-allow-ips '$(FORWARDED_ALLOW_IPS)'

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Property-based API fuzzing with schemathesis against a real server (a CI leg; not in `make test`).
FUZZ_EXAMPLES ?= 200
$(BIN)/.installed-fuzz: $(BIN)/.installed $(FUZZ_LOCK)
	$(PIP_LOCKED) $(FUZZ_LOCK)
	@touch $@

fuzz: $(BIN)/.installed-fuzz
	$(BIN)/python -m tests.fuzz.run_schemathesis --max-examples $(FUZZ_EXAMPLES) $(FUZZ_ARGS)

# The documentation site (docs/, mkdocs.yml), built as CI builds it: --strict fails on a broken
# link or a page left out of the nav. `make docs-serve` previews it on http://127.0.0.1:8001.
$(BIN)/.installed-docs: $(BIN)/.installed $(DOCS_LOCK)
	$(PIP_LOCKED) $(DOCS_LOCK)
	@touch $@

docs: $(BIN)/.installed-docs
	$(BIN)/mkdocs build --strict --site-dir build/site

docs-serve: $(BIN)/.installed-docs
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

# wrk drives the load; Debian's package is installed when it is missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

bench: $(BIN)/.installed
	@command -v wrk >/dev/null || { \
		echo "make bench: wrk is not installed; installing Debian's wrk package with apt-get"; \
		$(SUDO) apt-get install -y wrk || { $(SUDO) apt-get update && $(SUDO) apt-get install -y wrk; }; }
	$(BIN)/python -m tests.bench.run

# kill -9, PostgreSQL outage (with FAULTS_DATABASE_URL) and mixed-load tests; see tests/faults.
faults: $(BIN)/.installed
	$(BIN)/python -m tests.faults.run

# Resolution with uv (a pinned release, installed into the venv on first use): --universal
# resolves once for every platform and Python >= 3.11, so the Python 3.12 image and a Python 3.11
# laptop install the same pins. Each lock starts from its current pins (only what must move
# moves) and is constrained by the next larger lock, so the three agree. Needs the package index.
UV_VERSION := 0.13.8
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 \
	--generate-hashes --quiet --custom-compile-command 'make lock' $(if $(UPGRADE),--upgrade)

$(BIN)/uv:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)

lock: $(BIN)/uv
	@mkdir -p requirements
	$(UV_COMPILE) --extra dev --extra fuzz -o $(FUZZ_LOCK)
	$(UV_COMPILE) --extra dev -c $(FUZZ_LOCK) -o $(DEV_LOCK)
	$(UV_COMPILE) -c $(DEV_LOCK) -o $(RUNTIME_LOCK)
	$(UV_COMPILE) --extra docs -c $(FUZZ_LOCK) -o $(DOCS_LOCK)
	$(BIN)/python -m tests.lockfile stamp $(RUNTIME_LOCK) $(DEV_LOCK) $(FUZZ_LOCK) $(DOCS_LOCK)

lint: $(BIN)/.installed
	$(BIN)/ruff check app tests alembic
	$(BIN)/ruff format --check app tests alembic

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
