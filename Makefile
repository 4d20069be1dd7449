# mini-paas: `make up` starts the platform, `make test` runs every test.
SHELL := /bin/bash
VENV := .venv
MINIPAAS := $(VENV)/bin/minipaas
PYTEST := $(VENV)/bin/pytest

.PHONY: up down ps logs test test-unit test-deployments test-swarm bench bench-scale lint format deps dev-deps \
	migrate-up migrate-down migrate-current migrate-create migrate-stamp

deps:
	@scripts/install-deps.sh

dev-deps:
	@scripts/install-deps.sh --dev

up: deps  ## install what is missing, start everything, print the URLs
	@$(MINIPAAS) platform up

down:  ## stop the API, worker, router, Redis and PostgreSQL started by `make up`
	@$(MINIPAAS) platform down

ps:
	@$(MINIPAAS) platform ps

logs:
	@$(MINIPAAS) platform logs

# Test sessions side by side, each with a platform of its own on the one engine: the tests
# mostly wait on containers, so two sessions nearly halve the time on 2 cores
TEST_SESSIONS ?= 2

test: dev-deps  ## the whole suite against real PostgreSQL, Redis, Docker and nginx, then the deployment tests again on Docker Swarm
	@scripts/ensure-docker.sh
	@$(PYTEST) -q -n $(TEST_SESSIONS) --dist loadfile -m "not alone" --durations=25
	@echo "Then the tests that run alone on the engine (they restart it, or time what a second session's load would shift)"
	@$(PYTEST) -q -m alone --durations=10
	@echo "Second pass: the deployment tests with RUNTIME=swarm (a one-node swarm on 127.0.0.1)"
	@RUNTIME=swarm $(PYTEST) -q -n $(TEST_SESSIONS) --dist loadfile -m deployments --durations=10

test-swarm: dev-deps  ## the deployment tests with RUNTIME=swarm only (make test's second pass)
	@scripts/ensure-docker.sh
	@RUNTIME=swarm $(PYTEST) -q -n $(TEST_SESSIONS) --dist loadfile -m deployments

test-unit: dev-deps  ## every test that needs no Docker engine (nor the platform it runs)
	@$(PYTEST) -q -m "not docker"

test-deployments: dev-deps
	@scripts/ensure-docker.sh
	@$(PYTEST) -q -n $(TEST_SESSIONS) --dist loadfile -m deployments

bench: dev-deps  ## deploy latency, keep-alive throughput by host, route switch, router metrics on/off, 10 and 50 deploys at once, API throughput, fairness, recovery after kills and a crash loop, build and deploy from source, deploy on Docker Swarm (~16 min)
	@scripts/ensure-docker.sh
	@$(VENV)/bin/python bench/deploy_and_route.py
	@echo
	@$(VENV)/bin/python bench/router_switch.py --rounds 3
	@echo
	@$(VENV)/bin/python bench/router_metrics.py
	@echo
	@$(VENV)/bin/python bench/parallel_deploys.py --apps 10 --workers 1 2
	@echo
	@$(VENV)/bin/python bench/parallel_deploys.py --apps 50 --workers 2
	@echo
	@$(VENV)/bin/python bench/api_throughput.py
	@echo
	@$(VENV)/bin/python bench/fairness.py
	@echo
	@$(VENV)/bin/python bench/recovery.py
	@echo
	@$(VENV)/bin/python bench/build_deploy.py
	@echo
	@$(VENV)/bin/python bench/swarm_deploy.py

bench-scale: dev-deps  ## 1,000 apps, 100 running: reconciler pass, platform memory, memory per app (~4 min)
	@scripts/ensure-docker.sh
	@$(VENV)/bin/python bench/scale.py

lint: dev-deps
	@$(VENV)/bin/ruff check src tests bench
	@$(VENV)/bin/ruff format --check src tests bench
	@$(VENV)/bin/mypy

format: dev-deps
	@$(VENV)/bin/ruff format src tests bench
	@$(VENV)/bin/ruff check --fix src tests bench

migrate-up:
	@$(MINIPAAS) migrate up

migrate-down:
	@$(MINIPAAS) migrate down

migrate-current:
	@$(MINIPAAS) migrate current

migrate-create:
	@test -n "$(m)" || { echo 'usage: make migrate-create m="what changes"'; exit 2; }
	@$(MINIPAAS) migrate create "$(m)"

migrate-stamp:
	@$(MINIPAAS) migrate stamp $(or $(rev),head)
