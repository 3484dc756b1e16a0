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
PROXY_FLAGS := $(if $(strip $(FORWARDED_ALLOW_IPS)),--proxy-headers --forwarded-allow-ips '$(FORWARDED_ALLOW_IPS)',--no-proxy-headers)

.PHONY: run test fuzz lint install clean bench faults

# The virtual environment is rebuilt when pyproject.toml changes.
$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/.installed

# With several workers, uvicorn restarts any that dies, forever: importing the application once
# first makes a configuration error stop `make run` with its one-line message instead.
run: $(BIN)/.installed
	@if [ "$(WORKERS)" -gt 1 ]; then $(BIN)/python -c 'import app.main'; fi
	$(BIN)/uvicorn app.main:app --host $(HOST) --port $(PORT) --workers $(WORKERS) $(PROXY_FLAGS)

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Property-based API fuzzing with schemathesis against a real server (a CI leg; not in `make test`).
FUZZ_EXAMPLES ?= 200
$(BIN)/.installed-fuzz: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,fuzz]'
	@touch $@

fuzz: $(BIN)/.installed-fuzz
	$(BIN)/python -m tests.fuzz.run_schemathesis --max-examples $(FUZZ_EXAMPLES) $(FUZZ_ARGS)

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

lint: $(BIN)/.installed
	$(BIN)/ruff check app tests alembic
	$(BIN)/ruff format --check app tests alembic

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
