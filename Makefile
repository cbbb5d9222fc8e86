# Switchboard: two commands run everything.
#   make dev    install what is missing, start the whole platform (infra, services, gateway)
#   make test   the same stack, then every test against it
PY := .venv/bin/python

.PHONY: dev dev-down status install test test-fast lint bench logs

install:
	@scripts/install.sh

dev: install
	@$(PY) scripts/devstack.py up

dev-down:
	@$(PY) scripts/devstack.py down

status:
	@$(PY) scripts/devstack.py status

test: install
	@$(PY) -m ruff check libs services tests bench scripts conftest.py
	@$(PY) scripts/devstack.py up --quiet
	@$(PY) -m pytest $(PYTEST_ARGS)

# Skip the slow fault-injection tests (broker restart, process kills) while iterating.
test-fast: install
	@$(PY) scripts/devstack.py up --quiet
	@$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint:
	@$(PY) -m ruff check libs services tests bench scripts conftest.py
	@$(PY) -m pytest libs/common/tests/test_architecture.py -q

bench: install
	@command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null \
		|| (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	@$(PY) scripts/devstack.py up --quiet
	@$(PY) bench/run.py $(BENCH_ARGS)

logs:
	@tail -n 50 -f .local/logs/*.log
