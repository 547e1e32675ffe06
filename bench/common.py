"""What every scenario shares: figures printed beside their same-run baseline, a Postgres
database of the scenario's own, the real API and worker wired to loopback services, and a
count of the Postgres round trips a piece of work makes."""

from __future__ import annotations

import contextlib
import os
import secrets
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
from pydantic import SecretStr
from sqlalchemy import event, insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app.context import AppContext
from app.db.migrate import upgrade
from app.db.models import Base, Org, OrgEngine, OrgLocation, OrgQuestion, Partner
from app.metrics import DATABASE_PINGS
from app.queue.messages import EvaluateOrg, Message
from app.queue.sqs import SqsQueue
from app.settings import Settings
from devtools.embedded import serve_api
from devtools.emulator.config import PROVIDERS

# The machine's Postgres (trust auth on loopback); each scenario makes and drops its own
# database there. BENCH_POSTGRES_URL names another server, e.g. an RDS instance.
ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# Rate limits no scenario reaches unless it measures rate limiting.
UNLIMITED = 1_000_000


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured figure beside the baseline it is judged against, measured in the same run:
    the ratio is what carries over between machines."""

    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    goal: str = ""

    def line(self) -> str:
        text = f"  {self.name:<44} {_number(self.value):>10} {self.unit:<9}"
        if self.baseline is not None:
            text += f" vs {self.baseline_name} {_number(self.baseline)} → {self.ratio()}"
        if self.goal:
            text += f"   (goal {self.goal})"
        return text

    def ratio(self) -> str:
        if self.baseline:
            return f"×{self.value / self.baseline:.2f}"
        return "equal" if self.value == self.baseline else "×∞"


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def report(scenario: str, figures: list[Figure], notes: list[str] | None = None) -> None:
    print(f"\n[{scenario}]", flush=True)
    for figure in figures:
        print(figure.line(), flush=True)
    for note in notes or []:
        print(f"  {note}", flush=True)


@contextlib.asynccontextmanager
async def scratch_database() -> AsyncIterator[str]:
    """A fresh, migrated Postgres database under a unique name; dropped at the end."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(ADMIN_URL, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    url = f"{base}/{name}"
    try:
        context = AppContext.create(Settings(database_url=SecretStr(url)))
        async with context:
            await upgrade(context.db)
        yield url
    finally:
        admin = await asyncpg.connect(ADMIN_URL, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def bench_settings(database_url: str, **overrides: Any) -> Settings:
    """Simulated engines answering at once, no rate limit in the way, quiet logs."""
    limits = {f"{provider}_requests_per_minute": UNLIMITED for provider in (*PROVIDERS, "analysis")}
    values: dict[str, Any] = {
        "database_url": SecretStr(database_url),
        "engine_mode": "simulated",
        "simulated_latency_ms": 0,
        "analysis_provider": "simulated",
        "log_level": "WARNING",
        "sqs_wait_seconds": 1,
        # The bench sets up its orgs, and polls `/healthz` for a control, as fast as the API
        # answers.
        "rate_limit_requests": UNLIMITED,
        "rate_limit_anonymous_requests": UNLIMITED,
        **limits,
        **overrides,
    }
    return Settings.model_validate(values)


@dataclass(frozen=True, slots=True)
class Matrix:
    questions: int
    engines: tuple[str, ...]
    locations: tuple[str, ...]

    @property
    def runs(self) -> int:
        return self.questions * len(self.engines) * len(self.locations)


async def create_orgs(
    api: httpx.AsyncClient, count: int, matrix: Matrix, *, orgs_per_partner: int = 10
) -> list[str]:
    """`count` orgs with `matrix` each, `orgs_per_partner` to a partner (the partner's row is
    locked whenever its money moves), set up through the API; their ids."""
    questions = [f"Which vendor is best for use case {n}?" for n in range(1, matrix.questions + 1)]
    org_ids = []
    partner: dict[str, Any] = {}
    for n in range(count):
        if n % orgs_per_partner == 0:
            partner = _ok(
                await api.post(
                    "/partners",
                    json={"name": f"bench-{uuid.uuid4().hex[:8]}", "balance": "1000000"},
                )
            )
        org = _ok(
            await api.post(
                "/orgs",
                json={
                    "partner_id": partner["id"],
                    "name": f"Acme Analytics {n}",
                    "aliases": ["Acme"],
                    "domains": ["acme-analytics.com"],
                    "competitors": ["Northwind Labs", "Contoso Systems"],
                },
            )
        )
        _ok(await api.put(f"/orgs/{org['id']}/questions", json={"questions": questions}))
        _ok(await api.put(f"/orgs/{org['id']}/engines", json={"engines": list(matrix.engines)}))
        _ok(
            await api.put(
                f"/orgs/{org['id']}/locations", json={"locations": list(matrix.locations)}
            )
        )
        org_ids.append(str(org["id"]))
    return org_ids


@contextlib.asynccontextmanager
async def api_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real API over loopback HTTP, with a context of its own."""
    token = secrets.token_urlsafe(16)
    settings = settings.model_copy(update={"api_token": SecretStr(token)})
    async with (
        AppContext.create(settings) as context,
        serve_api(settings, context) as url,
        httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as client,
    ):
        yield client


async def seed_orgs(
    database_url: str, count: int, matrix: Matrix, *, orgs_per_partner: int = 10
) -> list[str]:
    """`count` orgs like `create_orgs` makes, written straight to the database a table at a
    time: for scenarios that need hundreds of orgs and measure something else than their
    setup (through the API it takes four requests an org)."""
    questions = [f"Which vendor is best for use case {n}?" for n in range(1, matrix.questions + 1)]
    partners = [
        {
            "id": uuid.uuid4(),
            "name": f"bench-{uuid.uuid4().hex[:8]}",
            "balance": Decimal(1_000_000),
            "reserved": Decimal(0),
            "price_per_run": Decimal("0.05"),
        }
        for _ in range(-(-count // orgs_per_partner))
    ]
    orgs = [
        {
            "id": uuid.uuid4(),
            "partner_id": partners[n // orgs_per_partner]["id"],
            "name": f"Acme Analytics {n}",
            "aliases": ["Acme"],
            "domains": ["acme-analytics.com"],
            "competitors": ["Northwind Labs", "Contoso Systems"],
            # Creation order is enqueue-all's order: one stamp each, a microsecond apart.
            "created_at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=n),
        }
        for n in range(count)
    ]
    rows: list[tuple[type[Base], list[dict[str, Any]]]] = [
        (Partner, partners),
        (Org, orgs),
        (
            OrgQuestion,
            [
                {"org_id": org["id"], "text": text, "position": position}
                for org in orgs
                for position, text in enumerate(questions)
            ],
        ),
        (
            OrgEngine,
            [{"org_id": org["id"], "engine_id": e} for org in orgs for e in matrix.engines],
        ),
        (
            OrgLocation,
            [{"org_id": org["id"], "country": c} for org in orgs for c in matrix.locations],
        ),
    ]
    settings = Settings(database_url=SecretStr(database_url))
    async with AppContext.create(settings) as context, context.sessions() as session:
        for model, values in rows:
            if values:
                await session.execute(insert(model), values)
        await session.commit()
    return [str(org["id"]) for org in orgs]


def _ok(response: httpx.Response) -> Any:
    response.raise_for_status()
    return response.json()


@dataclass
class RoundTrips:
    """Postgres round trips as the client makes them: each BEGIN, statement (an executemany
    counts once: asyncpg pipelines it), COMMIT or ROLLBACK, and each liveness ping of a
    pooled connection."""

    begins: int = 0
    statements: int = 0
    commits: int = 0
    rollbacks: int = 0
    checkouts: int = 0
    pings: int = 0
    _pings_at_start: float = field(default=0.0, repr=False)

    @property
    def total(self) -> int:
        return self.begins + self.statements + self.commits + self.rollbacks + self.pings

    def __add__(self, other: RoundTrips) -> RoundTrips:
        return RoundTrips(
            begins=self.begins + other.begins,
            statements=self.statements + other.statements,
            commits=self.commits + other.commits,
            rollbacks=self.rollbacks + other.rollbacks,
            checkouts=self.checkouts + other.checkouts,
            pings=self.pings + other.pings,
        )


@contextlib.contextmanager
def counting_round_trips(engine: AsyncEngine) -> Iterator[RoundTrips]:
    counts = RoundTrips(_pings_at_start=_pings())
    sync_engine = engine.sync_engine

    # A connection in autocommit sends no BEGIN, COMMIT or ROLLBACK: its statements are
    # their own transactions.
    def begin(connection: Connection) -> None:
        counts.begins += _in_transaction(connection)

    def statement(*_args: Any) -> None:
        counts.statements += 1

    def commit(connection: Connection) -> None:
        counts.commits += _in_transaction(connection)

    def rollback(connection: Connection) -> None:
        counts.rollbacks += _in_transaction(connection)

    def checkout(*_args: Any) -> None:
        counts.checkouts += 1

    listeners: list[tuple[Any, str, Any]] = [
        (sync_engine, "begin", begin),
        (sync_engine, "before_cursor_execute", statement),
        (sync_engine, "commit", commit),
        (sync_engine, "rollback", rollback),
        (sync_engine.pool, "checkout", checkout),
    ]
    for target, name, listener in listeners:
        event.listen(target, name, listener)
    try:
        yield counts
    finally:
        for target, name, listener in listeners:
            event.remove(target, name, listener)
        counts.pings = round(_pings() - counts._pings_at_start)


def _in_transaction(connection: Connection) -> int:
    return int(connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT")


def _pings() -> float:
    return sum(
        sample.value
        for metric in DATABASE_PINGS.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def median_ms(seconds: Iterable[float]) -> float:
    """The median of `seconds`, in milliseconds."""
    return statistics.median(seconds) * 1000


def p99(values: list[float]) -> float:
    """The 99th percentile, linear between the closest ranks (numpy's default). With a few
    hundred samples the default exclusive method reaches past the second largest towards the
    largest: one stall of the shared machine would be the figure."""
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


class TimedQueue(SqsQueue):
    """The real SQS client, timing each send by the batch its job names, and SendMessageBatch
    calls all together."""

    def __init__(self, settings: Settings, queue_url: str) -> None:
        super().__init__(settings, queue_url)
        self.sends: dict[uuid.UUID, float] = {}
        self.batch_seconds = 0.0

    @classmethod
    def instead_of(cls, context: AppContext, queue_url: str) -> TimedQueue:
        """A timed queue at `queue_url` in place of the context's own, which is closed; the
        context closes this one on exit."""
        context.require_queue().close()
        timed = cls(context.settings, queue_url)
        context.queue = timed
        return timed

    async def send_batch(self, messages: Sequence[Message]) -> list[bool]:
        started = time.perf_counter()
        try:
            return await super().send_batch(messages)
        finally:
            self.batch_seconds += time.perf_counter() - started

    async def send(self, message: Message, *, delay_seconds: int = 0) -> str:
        started = time.perf_counter()
        try:
            return await super().send(message, delay_seconds=delay_seconds)
        finally:
            if isinstance(message, EvaluateOrg):
                self.sends[message.batch_id] = time.perf_counter() - started
