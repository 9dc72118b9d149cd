# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint typecheck clean bench audit lock screenshots

# requirements.lock pins every dependency: what the tests run is what `make audit` checks.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/prodio serve

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

# Known advisories in requirements.lock (pip-audit); says so loudly when no advisory
# database can be reached.
audit: install
	$(BIN)/python .ci/audit.py

# Re-pin every dependency after changing pyproject.toml: resolves in a fresh venv.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet -e '.[dev]'
	.lock-venv/bin/pip freeze --exclude-editable > requirements.lock
	rm -rf .lock-venv

# Benchmarks (see docs/performance.md): `make bench`, or `make bench ARGS=--quick` (about a minute).
# Installs wrk, redis-server and nginx from apt when missing, and the bench extra (plot, profilers).
bench: install
	bash bench/install-tools.sh
	$(BIN)/python -c "import matplotlib" 2>/dev/null || $(BIN)/pip install --quiet -c requirements.lock -e '.[dev,bench]'
	$(BIN)/python bench/run.py $(ARGS)

# The README's screenshots, from the browser test that signs in (needs chromium).
screenshots: install
	PRODIO_DOCS_SCREENSHOTS=1 $(BIN)/pytest tests/e2e/test_login.py -k test_login_page_then_wrong_password_then_home

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
