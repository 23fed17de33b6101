# Helpdesk backend — every entry point a developer or CI needs.
# uv is bootstrapped from PyPI into .local/tools when it is not installed.

SHELL := /bin/bash
UV_VERSION := 0.13.8
TOOLS := .local/tools
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
PYTEST_ARGS ?=
ROUTING_BENCH_ARGS ?=
INTAKE_BENCH_ARGS ?=

.PHONY: help install run test lint contracts contracts-check token bench deploy-check clean

help:
	@echo "make run        start PostgreSQL, Kafka and the five services (Ctrl-C stops all)"
	@echo "make test       install and run every test against real PostgreSQL and Kafka"
	@echo "make lint       ruff + mypy"
	@echo "make bench      benchmarks (reports in bench/results/)"
	@echo "                ROUTING_BENCH_ARGS=\"--rate 100 --duration 10\": a shorter routing latency run"
	@echo "                INTAKE_BENCH_ARGS=\"--connections 32,256 --seconds 6\": a shorter intake sweep"
	@echo "make contracts  regenerate JSON Schemas and the AsyncAPI document from the event models"
	@echo "make token ROLE=<role> [SUB=<user id>]   print a dev bearer token (last line)"
	@echo "make deploy-check  render the Kubernetes manifests (needs kubectl; make test checks the rest)"

$(TOOLS)/bin/uv:
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

install: $(if $(findstring $(TOOLS),$(UV)),$(TOOLS)/bin/uv)
	@$(UV) sync --frozen --quiet

run: install
	$(UV) run --frozen helpdesk run

test: install
	$(UV) run --frozen pytest $(PYTEST_ARGS)

lint: install
	$(UV) run --frozen ruff check .
	$(UV) run --frozen mypy shared/src services/src intake-service/src routing-service/src \
		review-service/src kb-service/src metrics-service/src

contracts: install
	$(UV) run --frozen python -m helpdesk_shared.contracts.generate

contracts-check: install
	$(UV) run --frozen python -m helpdesk_shared.contracts.generate --check

bench: install
	$(UV) run --frozen python bench/intake_bench.py $(INTAKE_BENCH_ARGS)
	@if [ -f bench/classifier_bench.py ]; then $(UV) run --frozen python bench/classifier_bench.py; fi
	$(UV) run --frozen python bench/routing_bench.py $(ROUTING_BENCH_ARGS)
	@echo "reports in bench/results/"

token: install
	@test -n "$(ROLE)" || { echo "usage: make token ROLE=<role> [SUB=<user id>]" >&2; exit 2; }
	@$(UV) run --frozen --quiet helpdesk token --role "$(ROLE)" $(if $(SUB),--sub "$(SUB)")

deploy-check:
	@command -v kubectl >/dev/null || { echo "deploy-check needs kubectl" >&2; exit 2; }
	kubectl kustomize deploy/k8s > /dev/null
	@echo "deploy/k8s renders"

clean:
	rm -rf .local/logs .pytest_cache .mypy_cache .ruff_cache
