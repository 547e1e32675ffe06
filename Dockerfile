# One image, two containers: `senso api` (the default command) and `senso worker`.
# Built by scripts/build.sh for linux/amd64; the tests run on the same Python minor (3.11).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /bin/uv
# Bytecode compiled here so containers start without compiling; packages copied out of uv's
# cache rather than linked to it; the base image's Python, never a downloaded one.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first: this layer is reused until uv.lock changes.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project
COPY README.md ./
COPY app ./app
COPY worker ./worker
COPY senso ./senso
RUN uv sync --frozen --no-dev --no-editable

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 senso \
    && useradd --system --uid 10001 --gid senso --no-create-home --shell /usr/sbin/nologin senso
COPY --from=builder /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
USER 10001:10001
EXPOSE 8080
# Exec form: no shell stands between SIGTERM and senso. On ECS the task definition also runs
# an init process (initProcessEnabled) that forwards signals and reaps orphans.
ENTRYPOINT ["senso"]
CMD ["api"]
