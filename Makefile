# Every routine command. `make help` lists them.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
export DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
export AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672/

.PHONY: help install setup migrate topology contracts lint format types pytest test test-unit test-integration clean

help: ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: $(PY) ## Install the project and its dev tools into .venv
	$(PY) -m pip install -q -e ".[dev]"

setup: install ## Migrate the database and declare the broker topology (DATABASE_URL, AMQP_URL)
	$(BIN)/imagebot migrate
	$(BIN)/imagebot topology declare

migrate: ## Bring the database to the newest revision
	$(BIN)/imagebot migrate

topology: ## Regenerate rabbitmq/definitions.json from the code
	$(BIN)/imagebot topology export > rabbitmq/definitions.json

contracts: ## Regenerate docs/events/*.json (one JSON Schema per event)
	rm -f docs/events/*.json
	$(BIN)/imagebot contracts export docs/events

lint: ## ruff lint and format check
	$(BIN)/ruff check src tests migrations
	$(BIN)/ruff format --check src tests migrations

format: ## Fix what ruff can
	$(BIN)/ruff check --fix src tests migrations
	$(BIN)/ruff format src tests migrations

types: ## mypy, strict
	$(BIN)/mypy

pytest: ## All tests (unit, integration on the real PostgreSQL and RabbitMQ)
	$(BIN)/pytest

test-unit: ## Unit tests only
	$(BIN)/pytest -m unit

test-integration: ## Integration tests only
	$(BIN)/pytest -m integration

test: lint types pytest ## What CI runs: lint, types, every test

clean: ## Remove caches
	rm -rf .pytest_cache .mypy_cache .ruff_cache
