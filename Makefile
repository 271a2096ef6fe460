# Partyline — every target installs what it needs first (fresh Debian 12 machine).
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV_VERSION ?= 0.9.5
export PATH := $(HOME)/.local/bin:$(PATH)
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
PYTEST_ARGS ?=


DEMO_ARGS ?=
FANOUT_ARGS ?=
COMPOSE_ARGS ?=
.PHONY: demo help deps uv sync system-deps test test-unit test-e2e lint format bench bench-node bench-fanout clean wheelhouse compose-demo compose-down

help: ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

uv:
	@command -v uv >/dev/null 2>&1 || [ -x $(HOME)/.local/bin/uv ] || python3 -m pip install --user --quiet "uv>=0.5" || python3 -m pip install --quiet --break-system-packages "uv>=0.5"

sync: uv ## create .venv from uv.lock (all extras)
	$(UV) sync --frozen --all-extras

system-deps: ## install redis-server, PostgreSQL, chromium (UI test), docker.io, docker-compose, debootstrap and ssh when missing (apt-get)
	@PKGS=""; \
	command -v redis-server >/dev/null 2>&1 || PKGS="$$PKGS redis-server"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || PKGS="$$PKGS postgresql"; \
	command -v chromium >/dev/null 2>&1 || PKGS="$$PKGS chromium"; \
	command -v dockerd >/dev/null 2>&1 || PKGS="$$PKGS docker.io"; \
	command -v docker-compose >/dev/null 2>&1 || PKGS="$$PKGS docker-compose"; \
	command -v debootstrap >/dev/null 2>&1 || PKGS="$$PKGS debootstrap"; \
	command -v ssh-keygen >/dev/null 2>&1 || PKGS="$$PKGS openssh-client"; \
	if [ -n "$$PKGS" ]; then \
	  echo "installing$$PKGS (apt-get)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$PKGS >/dev/null; \
	fi
	@# the Debian packages may start system services on their default ports; the project never uses them
	@command -v redis-server >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null && command -v chromium >/dev/null
	@command -v dockerd >/dev/null && command -v docker-compose >/dev/null && command -v debootstrap >/dev/null
	@command -v ssh >/dev/null && command -v ssh-keygen >/dev/null

deps: sync system-deps

demo: deps ## start alice + bob + a coordinator, run one PSI, keep running until Ctrl-C (DEMO_ARGS="--parties alice,bob,carol --rows 100000 --once")
	.venv/bin/python -m deploy.local demo $(DEMO_ARGS)

wheelhouse: sync ## every locked wheel of the node and coordinator in build/wheelhouse (offline image builds)
	.venv/bin/python -m deploy.compose wheelhouse

compose-demo: deps ## the federation in containers: build offline, start, wait healthy, one PSI (COMPOSE_ARGS="--parties alice,bob,carol demo --rows 5000")
	.venv/bin/python -m deploy.compose $(if $(COMPOSE_ARGS),$(COMPOSE_ARGS),demo)

compose-down: sync ## remove every container, network, volume and generated secret of compose-demo
	.venv/bin/python -m deploy.compose down

test: deps ## run the whole test suite (unit + real two-party e2e + compose + Ansible; PYTEST_ARGS='-m "not compose and not ansible"' skips the containers)
	.venv/bin/pytest --durations=25 $(PYTEST_ARGS)

test-unit: deps ## unit tests only
	.venv/bin/pytest -m "not e2e" $(PYTEST_ARGS)

lint: sync ## ruff lint + format check + type check (mypy on node/, coordinator/, certs/) + ansible-lint (production) + yamllint
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	cd deploy/ansible && PATH=$(CURDIR)/.venv/bin:$$PATH ../../.venv/bin/ansible-lint --profile production
	cd deploy/ansible && ../../.venv/bin/yamllint --strict -c .yamllint .

format: sync
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

bench: deps ## bare library vs. node stack (BENCH_ARGS), jobs through the coordinator (FANOUT_ARGS), then the goals table
	.venv/bin/python bench/psi_node.py $(BENCH_ARGS)
	.venv/bin/python bench/fanout.py $(FANOUT_ARGS)
	.venv/bin/python bench/goals.py

bench-node: deps ## only the bare library vs. the node stack, cold and warm (BENCH_ARGS="--rows 10000000 --protocols RR22 --stack-modes warm")
	.venv/bin/python bench/psi_node.py $(BENCH_ARGS)

bench-fanout: deps ## back-to-back PSI jobs through the coordinator, warm sessions vs. cold (FANOUT_ARGS="--jobs 4 --modes warm")
	.venv/bin/python bench/fanout.py $(FANOUT_ARGS)

clean:
	rm -rf .venv .pytest_cache .ruff_cache
