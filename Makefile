# Every target that needs Python builds its own virtualenv from this repo's files.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint demo up bench chaos clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check shared services tests bench
	$(BIN)/mypy

demo: $(STAMP)
	$(BIN)/python -m services.demo

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.run

chaos: $(STAMP)
	@rm -f .chaos-report.txt
	RBEE_CHAOS_LONG=1 RBEE_CHAOS_REPORT=.chaos-report.txt $(BIN)/pytest -q tests/hive/transfer/test_chaos.py; \
	status=$$?; cat .chaos-report.txt 2>/dev/null; rm -f .chaos-report.txt; exit $$status

# Compose v2 (`docker compose`) where its plugin is installed, else v1 (`docker-compose`: Debian's
# docker.io comes with it and without the plugin); COMPOSE=... overrides. Looked up only by `make up`.
COMPOSE ?= $(shell if docker compose version >/dev/null 2>&1; then echo "docker compose"; \
	elif command -v docker-compose >/dev/null 2>&1; then echo docker-compose; fi)

up:
	@if [ -z "$(COMPOSE)" ]; then \
		echo "make up: neither 'docker compose' (Compose v2) nor 'docker-compose' (v1) is installed" >&2; exit 1; fi
	$(COMPOSE) up --build

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
