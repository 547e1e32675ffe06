"""The API server, a worker and an SQS endpoint inside this process (the demo, the bench and
the tests)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import uvicorn

from app.api.app import create_app
from app.api.edge_wiring import server_options
from app.context import AppContext
from app.settings import Settings
from worker.runtime import Worker

# A loaded machine has taken over 20 s to start moto's server (its imports).
MOTO_START_SECONDS = 60


@contextlib.asynccontextmanager
async def serve_api(
    settings: Settings, context: AppContext, *, port: int = 0
) -> AsyncIterator[str]:
    """Serve the real API over HTTP on a loopback port (0: a free one); yields its base URL."""
    options = server_options(settings)
    app = create_app(settings, context)
    async with serve_asgi(app, lifespan="on", port=port, **options) as bound:
        yield f"http://127.0.0.1:{bound}"


@contextlib.asynccontextmanager
async def serve_asgi(
    app: Callable[..., Any], *, port: int = 0, **options: Any
) -> AsyncIterator[int]:
    """Serve an ASGI app with uvicorn on a loopback port (0: a free one) until the block ends;
    yields the port. `options` are uvicorn.Config's."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only then,
    # and without it every response body waits out a delayed ACK (about 40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(app, log_level="warning", log_config=None, **options)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                await task
                raise RuntimeError(f"{type(app).__name__} did not start")
            await asyncio.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        sock.close()


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _fake_aws_credentials() -> None:
    # boto3 signs every request; moto accepts any credentials.
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(variable, "embedded")


@contextlib.contextmanager
def moto_sqs_server() -> Iterator[str]:
    """moto's SQS server on a free loopback port, in this process; yields its endpoint URL.

    moto is the `embedded` extra, imported only here so production never loads it.
    """
    from moto.server import ThreadedMotoServer

    _fake_aws_credentials()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def moto_server_process(
    environment: Mapping[str, str] | None = None, *, nice: int = 0
) -> Iterator[str]:
    """moto's server as a process of its own on a free loopback port, `environment` added to
    this process's, at Linux nice `nice` from its start; yields its endpoint URL and stops it at
    the end. Beside an in-process server: its work takes no interpreter lock from the code it
    serves, and a setting read from its environment stays its own."""
    port = free_port()
    niced = ["nice", "-n", str(nice)] if nice else []
    process = subprocess.Popen(  # noqa: S603 - this interpreter, with arguments of our own
        [*niced, sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, **(environment or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + MOTO_START_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto's server exited with {process.returncode}")
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()  # noqa: S310
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"moto's server did not answer within {MOTO_START_SECONDS} s"
                    ) from None
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def moto_sqs_process() -> Iterator[str]:
    """moto's SQS server as a process of its own, at the lowest CPU priority; yields its
    endpoint.

    Where the API's or `enqueue_all`'s own time is measured, moto in that process would take
    the interpreter lock from them on every call: on its own it runs on the other core, as SQS
    is another host, and its cost stays out of theirs. SQS's CPU is not the task's in
    production either: here moto's gives way to the code measured beside it."""
    _fake_aws_credentials()
    with moto_server_process(nice=19) as endpoint:
        yield endpoint


@contextlib.asynccontextmanager
async def run_worker_task(
    context: AppContext, worker_id: str | None = None
) -> AsyncIterator[Worker]:
    """Run a worker loop until the block ends, then stop it as SIGTERM would."""
    worker = Worker(context, worker_id=worker_id)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.request_stop()
        await task
