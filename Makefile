# The README's two commands: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)

.PHONY: install demo test lint typecheck unit format bench

install:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
		|| python3 -m pip install --quiet --disable-pip-version-check uv
	@$(UV) sync --frozen --quiet

demo: install
	$(UV) run senso demo

test: install lint typecheck unit

lint:
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run shellcheck scripts/*.sh .ci/run
	$(UV) run hadolint Dockerfile

typecheck:
	$(UV) run mypy

unit:
	$(UV) run pytest

format: install
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

# The benchmark (README "The benchmark"): `make bench`, or `make bench BENCH_ARGS=--quick`.
bench: install
	$(UV) run python -m bench $(BENCH_ARGS)
