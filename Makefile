# Every routine command. `make help` lists them.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# Tests and benchmarks create throwaway databases on this server (and clean them up), and
# throwaway exchanges/queues on this broker. Services and `migrate` read DATABASE_URL/AMQP_URL
# from the environment or .env (see .env.example) instead.
TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
TEST_AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672/
TEST_ENV = DATABASE_URL=$(TEST_DATABASE_URL) AMQP_URL=$(TEST_AMQP_URL)

.PHONY: help install demo setup migrate topology contracts lint format types pytest test test-unit test-integration clean

help: ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# The gpu extra (diffusers, transformers) runs on the CPU too. Plain pip takes torch's CPU wheel;
# uv and poetry would pull several GB of CUDA packages instead.
TORCH ?= torch==2.13.0

# Every command that runs something installed (.venv, the AsyncAPI parser) depends on these
# stamps, so each works on a fresh clone by itself; a stamp is remade (its install runs again)
# only when a file it installs from changes.
VENV_INSTALLED := $(VENV)/.installed
ASYNCAPI_PARSER := tools/asyncapi/node_modules/.package-lock.json
NPM_CI = npm ci --prefix tools/asyncapi --no-audit --no-fund --loglevel=error
# promtool and amtool (tests check monitoring/ with them) come from Debian's packages.
MONITORING_TOOLS := $(VENV)/.monitoring-tools
INSTALLED := $(VENV_INSTALLED) $(ASYNCAPI_PARSER) $(MONITORING_TOOLS)

$(VENV_INSTALLED): pyproject.toml | $(PY)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[gpu,dev]"
	touch $@

$(ASYNCAPI_PARSER): tools/asyncapi/package.json tools/asyncapi/package-lock.json
	$(NPM_CI)
	touch $@

# Installed only when missing. policy-rc.d (when none is there) keeps the packages from starting
# a Prometheus or Alertmanager daemon that would listen on 9090/9093; under systemd the units
# are also disabled, so none starts at boot either.
$(MONITORING_TOOLS): | $(PY)
	@if ! command -v promtool >/dev/null || ! command -v amtool >/dev/null; then \
	    sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	    guard=; [ -e /usr/sbin/policy-rc.d ] || { guard=1; printf '#!/bin/sh\nexit 101\n' | $$sudo tee /usr/sbin/policy-rc.d >/dev/null; $$sudo chmod +x /usr/sbin/policy-rc.d; }; \
	    $$sudo apt-get update -o DPkg::Lock::Timeout=300 -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -o DPkg::Lock::Timeout=300 -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null; \
	    status=$$?; [ -z "$$guard" ] || $$sudo rm -f /usr/sbin/policy-rc.d; \
	    if [ -d /run/systemd/system ]; then $$sudo systemctl disable --now prometheus prometheus-alertmanager >/dev/null 2>&1 || true; fi; \
	    [ $$status = 0 ]; \
	fi
	promtool --version >/dev/null && amtool --version >/dev/null
	touch $@

# pg_dump, pg_restore, createdb and dropdb (the backup scripts in postgres/, drilled by
# tests/integration/test_backup_restore.py) come from Debian's postgresql-client when missing.
PG_CLIENT_TOOLS := $(VENV)/.pg-client-tools
INSTALLED += $(PG_CLIENT_TOOLS)

$(PG_CLIENT_TOOLS): | $(PY)
	@if ! command -v pg_dump >/dev/null || ! command -v pg_restore >/dev/null || ! command -v createdb >/dev/null; then \
	    sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	    $$sudo apt-get update -o DPkg::Lock::Timeout=300 -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -o DPkg::Lock::Timeout=300 -y -qq --no-install-recommends postgresql-client >/dev/null; \
	fi
	pg_dump --version && pg_restore --version >/dev/null && createdb --version >/dev/null
	touch $@

# Debian's chromium, in which the backend API's panel is tested (Playwright drives it at
# /usr/bin/chromium; Playwright's own browser download is not reachable everywhere).
CHROMIUM := $(VENV)/.chromium
INSTALLED += $(CHROMIUM)

$(CHROMIUM): | $(PY)
	@if [ ! -x /usr/bin/chromium ]; then \
	    sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	    $$sudo apt-get update -o DPkg::Lock::Timeout=300 -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -o DPkg::Lock::Timeout=300 -y -qq --no-install-recommends chromium >/dev/null; \
	fi
	/usr/bin/chromium --version >/dev/null
	touch $@

install: $(INSTALLED) ## Install the project, dev tools, gpu extra (CPU torch), AsyncAPI parser, promtool/amtool, pg_dump/pg_restore and chromium (apt); again only when pyproject.toml or the parser's lockfile changes

demo: $(INSTALLED) ## The whole system with sandbox Telegram/YooKassa, played by a scripted user
	$(TEST_ENV) $(BIN)/imagebot demo --output demo-output

setup: $(INSTALLED) ## Migrate the database and declare the broker topology (DATABASE_URL, AMQP_URL)
	$(BIN)/imagebot migrate
	$(BIN)/imagebot topology declare
	$(BIN)/imagebot presets import catalog/presets.yaml

migrate: $(INSTALLED) ## Bring the database to the newest revision
	$(BIN)/imagebot migrate

topology: $(INSTALLED) ## Regenerate rabbitmq/definitions.json from the code
	$(BIN)/imagebot topology export > rabbitmq/definitions.json

contracts: $(INSTALLED) ## Regenerate docs/events/*.json (one JSON Schema per event)
	rm -f docs/events/*.json
	$(BIN)/imagebot contracts export docs/events

lint: $(INSTALLED) ## ruff lint and format check
	$(BIN)/ruff check src tests migrations bench
	$(BIN)/ruff format --check src tests migrations bench

format: $(INSTALLED) ## Fix what ruff can
	$(BIN)/ruff check --fix src tests migrations bench
	$(BIN)/ruff format src tests migrations bench

types: $(INSTALLED) ## mypy, strict
	$(BIN)/mypy

pytest: $(INSTALLED) ## All tests (unit, integration on the real PostgreSQL and RabbitMQ)
	$(TEST_ENV) $(BIN)/pytest

test-unit: $(INSTALLED) ## Unit tests only
	$(TEST_ENV) $(BIN)/pytest -m unit

test-integration: $(INSTALLED) ## Integration tests only
	$(TEST_ENV) $(BIN)/pytest -m integration

test: lint types pytest ## What CI runs: lint, types, every test

clean: ## Remove caches
	rm -rf .pytest_cache .mypy_cache .ruff_cache

bench-billing: $(INSTALLED) ## Billing: debits/s (spread, hot account), webhooks/s vs the raw asyncpg ceiling
	$(TEST_ENV) $(PY) bench/billing.py

bench-runner: $(INSTALLED) ## gpu_runner: device utilization and gaps over 100 back-to-back fake jobs (real broker)
	$(TEST_ENV) $(PY) bench/runner.py

.PHONY: bench-moderation
bench-moderation: $(INSTALLED) ## Moderation: the image detector's CPU time per image (one thread), the prompt check's per prompt
	$(PY) bench/moderation.py

# bench-gpu: on a GPU host, in the project's venv (`make install` takes PyPI's CUDA torch there).
# On a machine with its own CUDA torch and no internet: `make gpu-wheels` here (the bench's
# wheels, for the torch it finds), carry .gpu-wheels, and there
# `make bench-gpu GPU_PYTHON=python3` (docs/deployment.md, "GPU benchmark").
GPU_PYTHON ?= $(PY)
# pure-Python only, versions as this venv's; torch's own dependencies and the compiled ones
# (numpy, pillow, pyyaml, regex, safetensors, tokenizers, charset-normalizer) are the
# machine's. `make gpu-wheels` refuses a list that would bring anything compiled.
GPU_WHEELS := diffusers==0.42.1 transformers==5.25.0 accelerate==1.16.0 peft==0.21.2 \
	huggingface-hub==2.4.0 pydantic==2.13.5 annotated-types==0.8.0 typing-extensions==4.16.0 \
	pydantic-settings==2.16.3 python-dotenv==1.2.4 typing-inspection==0.4.5 \
	filelock==4.3.2 packaging==26.4 tqdm==4.70.1 requests==2.34.2 urllib3==2.8.0 idna==3.20 \
	certifi==2026.10.19.post1 httpx2==2.17.0 httpcore2==2.17.0 h11==0.16.0 anyio==4.16.0 \
	typer==0.29.2 click==8.5.1 shellingham==1.5.4 rich==15.0.0 markdown-it-py==4.3.0 mdurl==0.1.2 \
	pygments==2.21.0 annotated-doc==0.0.7 tomlkit==0.15.3 truststore==0.10.5 lazy-importer==0.1.0 \
	importlib-metadata==10.2.0 zipp==4.1.2
# The lent machines' image has no pydantic: its compiled core, built for their Python.
GPU_COMPILED_WHEELS := pydantic-core==2.46.5
GPU_PYTHON_VERSION ?= 3.12

.PHONY: bench-gpu gpu-wheels
bench-gpu: $(if $(filter $(PY),$(GPU_PYTHON)),$(INSTALLED)) ## gpu_runner on the GPU: s/image of Qwen-Image-Edit-2511 at real size, random weights (40 steps + CFG, Lightning 4/8, each speed lever), first job vs steady, peak memory
	@if [ "$(GPU_PYTHON)" != "$(PY)" ]; then \
	    $(GPU_PYTHON) -m pip install -q --no-index --no-deps --no-compile --upgrade --target .gpu-wheels/site .gpu-wheels/*.whl && \
	    PYTHONPATH=$(CURDIR)/.gpu-wheels/site $(GPU_PYTHON) bench/gpu.py $(ARGS); \
	else $(GPU_PYTHON) bench/gpu.py $(ARGS); fi

gpu-wheels: $(INSTALLED) ## Fetch bench-gpu's wheels into .gpu-wheels (~27 MB, for a GPU machine without internet; GPU_PYTHON_VERSION=3.12)
	rm -rf .gpu-wheels && $(PY) -m pip download -q --no-deps --only-binary=:all: -d .gpu-wheels $(GPU_WHEELS)
	@! ls .gpu-wheels | grep -v -- '-none-any.whl$$' || { echo "compiled wheels above: not for carrying" >&2; exit 1; }
	$(PY) -m pip download -q --no-deps --only-binary=:all: -d .gpu-wheels \
	    --python-version $(GPU_PYTHON_VERSION) --implementation cp --platform manylinux2014_x86_64 \
	    $(GPU_COMPILED_WHEELS)
	@du -sh .gpu-wheels

.PHONY: bench-backend
bench-backend: $(INSTALLED) ## Backend API: user search and every list's first page (filters, totals) p99 on 1M users, 5M jobs, 1M payments (ARGS="--users 100000 ...")
	$(TEST_ENV) $(PY) bench/backend.py $(ARGS)

.PHONY: bench-jobs
bench-jobs: $(INSTALLED) ## Jobs alone: request → dispatch latency p50/p99 and jobs/s, beside a raw broker hop
	$(TEST_ENV) $(PY) bench/jobs.py

.PHONY: chaos
chaos: $(INSTALLED) ## Fault injection: 1,000 jobs and 100 top-ups while services, RabbitMQ and PostgreSQL are killed/restarted; then the invariants
	$(TEST_ENV) $(PY) bench/chaos.py

.PHONY: asyncapi asyncapi-parser
asyncapi: $(INSTALLED) ## Regenerate docs/asyncapi.yaml (the AsyncAPI 3 document) from the code
	$(BIN)/imagebot docs asyncapi --namespace imagebot -o docs/asyncapi.yaml

asyncapi-parser: ## Install the official AsyncAPI parser (node) that tests validate the document with
	$(NPM_CI)

.PHONY: bench-gateway
bench-gateway: $(INSTALLED) ## Gateway: a 1,000-chat broadcast against a fake Bot API enforcing Telegram's limits
	$(TEST_ENV) $(PY) bench/gateway.py

.PHONY: bench-chat
bench-chat: $(INSTALLED) ## Gateway: tap → next screen p50/p99 for a quick user, and for 200 users during a 10,000-chat broadcast, within Telegram's limits
	$(TEST_ENV) $(PY) bench/chat.py

.PHONY: locales
locales: $(INSTALLED) ## Gateway: refresh the gettext catalogs from the code (new ids get empty translations) and compile them
	$(BIN)/pybabel extract -k _ --no-location --omit-header -o src/bot_gateway/locales/messages.pot src/bot_gateway
	$(BIN)/pybabel update -N -w 100 -D messages -i src/bot_gateway/locales/messages.pot -d src/bot_gateway/locales
	$(BIN)/pybabel compile -D messages -d src/bot_gateway/locales
	rm src/bot_gateway/locales/messages.pot

.PHONY: bench
bench: $(INSTALLED) ## The whole chain as processes: jobs/s, request→start and completion→chat latency, vs raw ceilings
	$(TEST_ENV) $(PY) bench/system.py
