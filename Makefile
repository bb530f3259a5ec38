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

up:
	docker compose up --build

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
