# The README's two commands: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
# Where the environment forbids writing bytecode, every Python process (each test process, each
# worker, CLI and AWS CLI process a test starts) compiled every module it imported from source
# again: more than a quarter of `make test`'s CPU. Caches go to __pycache__, which git ignores.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install demo test lint typecheck unit format bench

install:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
		|| python3 -m pip install --quiet --disable-pip-version-check uv
	@$(UV) sync --frozen --quiet

demo: install
	$(UV) run senso demo

# The type check and the tests side by side: the tests leave part of the two cores idle while
# they wait on their services, and mypy's 45–55 s of CPU fits there.
test: install lint
	@$(MAKE) --no-print-directory -j2 typecheck unit

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
