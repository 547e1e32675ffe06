"""Real services for the tests: Postgres and Redis as the machine runs them, moto's SQS
server on a free loopback port, and the API served over HTTP by uvicorn."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import boto3
import httpx
import pytest
from mypy_boto3_sqs import SQSClient
from pydantic import SecretStr

from app.context import AppContext
from app.db.migrate import upgrade
from app.db.session import create_engine
from app.queue.provision import create_queue_with_dlq
from app.settings import Settings
from devtools.embedded import moto_sqs_server, serve_api
from devtools.emulator.config import EmulatorConfig
from devtools.emulator.server import EmulatorServer
from tests.clock import OffsetClock
from tests.databases import DatabasePool, database_url
from tests.private_postgres import PrivatePostgres

# moto's server logs every request it answers; the tests' own logs are what matter.
logging.getLogger("werkzeug").setLevel(logging.WARNING)
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
API_TOKEN = "test-operator-token"
MAX_RECEIVE_COUNT = 4


def _database_url(name: str) -> str:
    """The database's URL, as SQLAlchemy's asyncpg dialect takes it."""
    return database_url(POSTGRES_ADMIN_URL, name).replace("postgresql://", "postgresql+asyncpg://")


@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[str]:
    with moto_sqs_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
async def template_database() -> AsyncIterator[str]:
    """Migrated once; the databases tests use are copies of it (see `tests/databases.py`)."""
    name = f"senso_tpl_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        engine = create_engine(Settings(database_url=SecretStr(_database_url(name))))
        await upgrade(engine)
        await engine.dispose()
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session")
async def databases(template_database: str) -> AsyncIterator[DatabasePool]:
    pool = DatabasePool(POSTGRES_ADMIN_URL, template_database)
    await pool.open()
    yield pool
    await pool.close()


@pytest.fixture
async def postgres_url(databases: DatabasePool) -> AsyncIterator[str]:
    """An empty, migrated database of this test's own."""
    name = await databases.take()
    yield _database_url(name)
    await databases.give_back(name)


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path}/senso.db"
    engine = create_engine(Settings(database_url=SecretStr(url)))
    await upgrade(engine)
    await engine.dispose()
    return url


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A Postgres server of the tests' own, to stop, freeze and restart (never the machine's)."""
    with PrivatePostgres() as server:
        yield server


@pytest.fixture(scope="session")
async def private_template(private_postgres: PrivatePostgres) -> str:
    name = "senso_template"
    url = await private_postgres.create_database(name)
    engine = create_engine(Settings(database_url=SecretStr(url)))
    await upgrade(engine)
    await engine.dispose()
    return name


@pytest.fixture
async def private_database(
    private_postgres: PrivatePostgres, private_template: str
) -> AsyncIterator[str]:
    """A migrated database on the private server; the server is up and thawed again after."""
    name = f"senso_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(private_postgres.admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{private_template}"')
    finally:
        await admin.close()
    try:
        yield private_postgres.url(name)
    finally:
        private_postgres.thaw()
        if not private_postgres.is_running:
            private_postgres.start()
        admin = await asyncpg.connect(private_postgres.admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
def queue_url(sqs_endpoint: str) -> str:
    settings = Settings(aws_endpoint_url=sqs_endpoint, sqs_wait_seconds=1)
    return create_queue_with_dlq(
        settings, f"jobs-{uuid.uuid4().hex[:12]}", max_receive_count=MAX_RECEIVE_COUNT
    )


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    with EmulatorServer() as server:
        yield server


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> EmulatorServer:
    """The engine emulator with its default config and an empty request log."""
    emulator_server.state.configure(EmulatorConfig())
    emulator_server.state.clear_log()
    return emulator_server


def make_settings(
    database_url: str, queue_url: str, sqs_endpoint: str, **overrides: object
) -> Settings:
    values: dict[str, object] = {
        "database_url": SecretStr(database_url),
        "api_token": SecretStr(API_TOKEN),
        "sqs_queue_url": queue_url,
        "aws_endpoint_url": sqs_endpoint,
        "redis_url": SecretStr(REDIS_URL),
        # Rate limits of one test are never another's (tests run in parallel).
        "redis_key_prefix": f"test-{uuid.uuid4().hex[:12]}",
        "sqs_wait_seconds": 1,
        "sqs_visibility_timeout": 30,
        "audit_sqs_wait_seconds": 1,
        "simulated_latency_ms": 2,
        "job_retry_base_seconds": 1,
        "job_max_attempts": MAX_RECEIVE_COUNT - 1,
        "run_retry_base_seconds": 0.01,
        "worker_drain_seconds": 10,
        "reconcile_interval_seconds": 3600,
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture
def settings(postgres_url: str, queue_url: str, sqs_endpoint: str) -> Settings:
    return make_settings(postgres_url, queue_url, sqs_endpoint)


@pytest.fixture
def clock() -> OffsetClock:
    """The clock of the `context` fixture: the system's, until a test moves it."""
    return OffsetClock()


@pytest.fixture
async def context(settings: Settings, clock: OffsetClock) -> AsyncIterator[AppContext]:
    async with AppContext.create(settings, clock) as context:
        yield context


@contextlib.asynccontextmanager
async def operator_client(
    settings: Settings, context: AppContext
) -> AsyncIterator[httpx.AsyncClient]:
    """An operator's client of the real API, served over loopback HTTP with `context`."""
    async with (
        serve_api(settings, context) as base_url,
        httpx.AsyncClient(
            base_url=base_url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30
        ) as client,
    ):
        yield client


@pytest.fixture
async def api(settings: Settings, context: AppContext) -> AsyncIterator[httpx.AsyncClient]:
    """An operator's client of the real API served over loopback HTTP."""
    async with operator_client(settings, context) as client:
        yield client


@pytest.fixture
def sqs(sqs_endpoint: str) -> Iterator[SQSClient]:
    client: SQSClient = boto3.client("sqs", region_name="us-east-1", endpoint_url=sqs_endpoint)
    yield client
    client.close()
