# Partyline — every target installs what it needs first (fresh Debian 12 machine).
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV_VERSION ?= 0.9.5
export PATH := $(HOME)/.local/bin:$(PATH)
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
PYTEST_ARGS ?=


DEMO_ARGS ?=
.PHONY: demo help deps uv sync system-deps test test-unit test-e2e lint format bench clean

help: ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

uv:
	@command -v uv >/dev/null 2>&1 || [ -x $(HOME)/.local/bin/uv ] || python3 -m pip install --user --quiet "uv>=0.5" || python3 -m pip install --quiet --break-system-packages "uv>=0.5"

sync: uv ## create .venv from uv.lock (all extras)
	$(UV) sync --frozen --all-extras

system-deps: ## install redis-server, the PostgreSQL server and chromium (UI test) when missing (apt-get)
	@PKGS=""; \
	command -v redis-server >/dev/null 2>&1 || PKGS="$$PKGS redis-server"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || PKGS="$$PKGS postgresql"; \
	command -v chromium >/dev/null 2>&1 || PKGS="$$PKGS chromium"; \
	if [ -n "$$PKGS" ]; then \
	  echo "installing$$PKGS (apt-get)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$PKGS >/dev/null; \
	fi
	@# the Debian packages may start system services on their default ports; the project never uses them
	@command -v redis-server >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null && command -v chromium >/dev/null

deps: sync system-deps

demo: deps ## start alice + bob + a coordinator, run one PSI, keep running until Ctrl-C (DEMO_ARGS="--parties alice,bob,carol --rows 100000 --once")
	.venv/bin/python -m deploy.local demo $(DEMO_ARGS)

test: deps ## run the whole test suite (unit + real two-party e2e)
	.venv/bin/pytest $(PYTEST_ARGS)

test-unit: deps ## unit tests only
	.venv/bin/pytest -m "not e2e" $(PYTEST_ARGS)

lint: sync ## ruff lint + format check + type check (mypy on node/, coordinator/, certs/)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

format: sync
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

bench: deps ## PSI benchmark: bare library vs. the node stack (prints ratios)
	.venv/bin/python bench/psi_node.py $(BENCH_ARGS)

clean:
	rm -rf .venv .pytest_cache .ruff_cache
