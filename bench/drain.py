"""A backlog drained by `senso worker` processes: runs per second, with one worker process and
with several, and what polling `GET /batches/{id}` costs meanwhile.

Orgs of 4 runs each are seeded in the database and their batches created by `enqueue_all`
(the jobs go to moto's SQS server); then worker processes (zero-latency simulated engines,
Postgres) drain the queue while this process polls one batch through the API: the batch
created last, which waits in the backlog until almost the end. The baselines are the same
run's: the drain by one process, and the same polling, at the same pace, just before the drain.
Every batch must complete and every completed run be charged exactly once. The CPU each
process spends a run — the workers, Postgres, moto, this process — is read from /proc once the
first 5% of the batches have completed: the emulator's share shows apart from ours.

`senso worker` runs at its default `WORKER_NICE` (19): on a shared host the API goes first.
moto runs at the lowest priority too, SQS being another host in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from app.context import AppContext
from app.evaluations.schedule import enqueue_all
from app.queue.provision import create_queue_with_dlq
from app.settings import Settings
from bench.common import (
    ADMIN_URL,
    UNLIMITED,
    Figure,
    Matrix,
    api_client,
    bench_settings,
    median_ms,
    p99,
    report,
    scratch_database,
    seed_orgs,
)
from bench.cpu import CpuSnapshot, server_pid
from devtools.embedded import moto_sqs_process

MATRIX = Matrix(questions=1, engines=("openai", "anthropic"), locations=("US", "GB"))
REPO_ROOT = Path(__file__).resolve().parents[1]
POLL_SAMPLES = {False: 150, True: 30}  # rounds of polling before the drain, by --quick
POLL_PAUSE = 0.05  # seconds between rounds of polling
# Issue 13's drain of 4-run batches by two workers, before; not measured in the same run.
ISSUE_RATE = 5.4
WARM_UP = 5
# The share of a drain's batches completed before its CPU is counted: the processes have started.
WARMED = 0.05


def drain_workers() -> int:
    """The worker processes of the measured drain (BENCH_DRAIN_WORKERS, 2 by default; more on a
    machine with the cores for them), against one."""
    value = os.environ.get("BENCH_DRAIN_WORKERS", "2")
    if not value.isdigit() or int(value) < 2:
        raise ValueError(f"BENCH_DRAIN_WORKERS must be a whole number of 2 or more, not {value!r}")
    return int(value)


@dataclass(frozen=True, slots=True)
class Drain:
    runs: int
    seconds: float
    idle: list[float]  # seconds, GET /batches/{id} before the drain
    polls: list[float]  # and during it
    # GET /healthz, which does nothing, before and during the drain: how long the machine itself
    # keeps a request waiting.
    idle_health: list[float]
    health: list[float]
    double_charged: int
    unfinished: int
    connections: int  # the most Postgres connections to the database seen during the drain
    # CPU milliseconds per run by process ("workers", "postgres", "emulator", "here"), from
    # the first WARMED share of the batches to the end: the workers' start is not counted.
    cpu_ms: dict[str, float]

    @property
    def rate(self) -> float:
        return self.runs / self.seconds


def _environment(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in _SETTING_NAMES}
    env.update(
        {
            "DATABASE_URL": settings.database_url.get_secret_value(),
            "SQS_QUEUE_URL": str(settings.sqs_queue_url),
            "AWS_ENDPOINT_URL": str(settings.aws_endpoint_url),
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "embedded"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "embedded"),
            "AWS_DEFAULT_REGION": "us-east-1",
            "ENGINE_MODE": "simulated",
            "SIMULATED_LATENCY_MS": "0",
            "ANALYSIS_PROVIDER": "simulated",
            "SQS_WAIT_SECONDS": "1",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            **{f"{engine.upper()}_REQUESTS_PER_MINUTE": str(UNLIMITED) for engine in _ENGINES},
        }
    )
    return env


_SETTING_NAMES = {name.upper() for name in Settings.model_fields}
_ENGINES = ("openai", "anthropic", "analysis")


@contextlib.asynccontextmanager
async def worker_processes(
    settings: Settings, count: int
) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """`count` `senso worker` processes on the settings' database and queue, stopped as SIGTERM
    would at the end of the block."""
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "senso",
            "worker",
            cwd=REPO_ROOT,
            env=_environment(settings),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    try:
        yield processes
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


async def connect(url: str) -> asyncpg.Connection:
    name = url.rsplit("/", 1)[1]
    return await asyncpg.connect(f"{ADMIN_URL.rsplit('/', 1)[0]}/{name}", timeout=10)


async def _drain(count: int, workers: int, limit: float, samples: int) -> Drain:
    async with scratch_database() as url:
        # The workers' polls and deletes are moto's work: in this process it would hold the
        # interpreter lock the API's GETs being timed here need.
        with moto_sqs_process() as endpoint:
            base = bench_settings(url, aws_endpoint_url=endpoint)
            queue_url = create_queue_with_dlq(
                base, f"bench-{uuid.uuid4().hex[:8]}", max_receive_count=5
            )
            settings = base.model_copy(update={"sqs_queue_url": queue_url})
            async with api_client(settings) as api:
                await seed_orgs(url, count, MATRIX)
                async with AppContext.create(settings) as context:
                    await enqueue_all(context, per_second=UNLIMITED)
                database = await connect(url)
                try:
                    # What enqueue_all just wrote is vacuumed now, not by autovacuum while the
                    # idle baseline is measured.
                    await database.execute("VACUUM ANALYZE")
                    # The batch created last, which waits in the backlog almost to the end: a
                    # customer polling a batch of theirs, pending in both phases.
                    polled = await database.fetchval(
                        "SELECT id FROM evaluation_batches ORDER BY created_at DESC, id LIMIT 1"
                    )
                    emulator = server_pid(endpoint, "moto.server")
                    return await _timed_drain(
                        api, database, str(polled), settings, workers, limit, samples, emulator
                    )
                finally:
                    await database.close()


async def _timed_drain(
    api: httpx.AsyncClient,
    database: asyncpg.Connection,
    polled: str,
    settings: Settings,
    workers: int,
    limit: float,
    samples: int,
    emulator: int | None,
) -> Drain:
    idle: list[float] = []
    idle_health: list[float] = []
    monitor = _Monitor(database)
    # The first rounds warm the API's caches and prepared statements up: not counted.
    for _ in range(WARM_UP):
        await _round(api, monitor, polled, [], [])
    for _ in range(samples):
        await _round(api, monitor, polled, idle, idle_health)
    polls: list[float] = []
    health: list[float] = []
    # Its own monitor: the connections seen are the drain's.
    monitor = _Monitor(database)
    started = time.monotonic()
    # The monitor's own count, read each round anyway, tells when the CPU starts to count.
    warmed = await monitor.batches_left() * (1 - WARMED)
    mark: tuple[int, CpuSnapshot] | None = None
    async with worker_processes(settings, workers) as processes:
        pids = [process.pid for process in processes]
        while time.monotonic() - started < limit:
            if not await _round(api, monitor, polled, polls, health):
                break
            if mark is None and monitor.left <= warmed:
                mark = (await _completed_runs(database), CpuSnapshot.take(pids, emulator))
        seconds = time.monotonic() - started
        end = (await _completed_runs(database), CpuSnapshot.take(pids, emulator))
    cpu_ms = {} if mark is None else end[1].per_run_ms(mark[1], end[0] - mark[0])
    runs, first, last = await database.fetchrow(
        "SELECT count(*), min(started_at), max(completed_at) FROM question_runs"
        " WHERE status = 'completed'"
    )
    # From the first run started to the last completed: the processes' start is not counted.
    if first is not None and last is not None:
        seconds = (last - first).total_seconds()
    double = await database.fetchval(
        "SELECT count(*) FROM (SELECT question_run_id FROM usage_ledger"
        " GROUP BY question_run_id HAVING count(*) > 1) twice"
    )
    unfinished = await database.fetchval(
        "SELECT count(*) FROM evaluation_batches WHERE status <> 'completed'"
    )
    return Drain(
        runs,
        seconds,
        idle,
        polls,
        idle_health,
        health,
        double,
        unfinished,
        monitor.connections,
        cpu_ms,
    )


async def _completed_runs(database: asyncpg.Connection) -> int:
    count: int = await database.fetchval(
        "SELECT count(*) FROM question_runs WHERE status = 'completed'"
    )
    return count


class _Monitor:
    """What the drain has left, and the most connections the database has seen."""

    def __init__(self, database: asyncpg.Connection) -> None:
        self.database = database
        self.connections = 0
        self.left = 0  # batches, as last counted

    async def batches_left(self) -> int:
        self.connections = max(
            self.connections,
            await self.database.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            ),
        )
        self.left = await self.database.fetchval(
            "SELECT count(*) FROM evaluation_batches WHERE status IN ('pending', 'running')"
        )
        return self.left


async def _round(
    api: httpx.AsyncClient,
    monitor: _Monitor,
    polled: str,
    gets: list[float],
    health: list[float],
) -> bool:
    """One round of polling, the same before the drain and during it (the baseline is the same
    requests at the same pace): the monitor's queries, the two timed requests, a pause. False
    once no batch is left to drain."""
    if not await monitor.batches_left():
        return False
    await _timed_get(api, f"/batches/{polled}", gets)
    await _timed_get(api, "/healthz", health)
    await asyncio.sleep(POLL_PAUSE)
    return True


async def _timed_get(api: httpx.AsyncClient, path: str, into: list[float]) -> None:
    began = time.perf_counter()
    (await api.get(path)).raise_for_status()
    into.append(time.perf_counter() - began)


def _p50(values: list[float]) -> str:
    return f"{median_ms(values):.1f}" if values else "-"


def _p99_figure(name: str, during: list[float], idle: list[float], goal: str = "") -> list[Figure]:
    """The p99 of requests during a drain against the same requests' before it, in ms (none
    when the drain ended before the first poll)."""
    if not during:
        return []
    return [Figure(name, p99(during) * 1000, "ms", p99(idle) * 1000, "p99 idle, before it", goal)]


async def scenario(quick: bool) -> None:
    # Issue 13's backlog, as deep for both: moto reads every message of a queue for each call,
    # so a deeper backlog drains slower through it (1,000 orgs at a little over half 300's
    # rate), which real SQS does not; a long drain also gives the p99 several hundred polls.
    count = 40 if quick else 1000
    many = drain_workers()
    limit = 25 if quick else 120
    one = await _drain(count, 1, limit, POLL_SAMPLES[quick])
    several = await _drain(count, many, limit, POLL_SAMPLES[quick])
    figures = [
        Figure(
            f"runs/s drained by {many} worker processes",
            several.rate,
            "runs/s",
            one.rate,
            "by one worker process",
            f"≈ ×{many} where each has a core of its own",
        )
    ]
    notes = [
        f"a note, not a baseline: issue 13 measured {ISSUE_RATE} runs/s by two workers before, "
        f"on its own machine; {several.rate:.1f} runs/s is ×{several.rate / ISSUE_RATE:.1f} that "
        f"(its goal: ×10)",
        f"{one.runs} runs of {count} orgs in {one.seconds:.1f} s by one process; "
        f"{several.runs} runs of {count} orgs in {several.seconds:.1f} s by {many}",
        f"batches not completed: {one.unfinished} and {several.unfinished}; runs charged "
        f"twice: {one.double_charged} and {several.double_charged}",
        f"most Postgres connections at once: {one.connections} with one worker process, "
        f"{several.connections} with {many} (this process's API holds some of them)",
        f"GET /batches/{{id}} p50 idle / during the drain: {_p50(one.idle)} / {_p50(one.polls)} "
        f"ms with one process, {_p50(several.idle)} / {_p50(several.polls)} ms with {many}; "
        f"{len(several.idle)} requests idle, {len(several.polls)} during, "
        f"{POLL_PAUSE * 1000:.0f} ms apart",
    ]
    figures += [
        *_p99_figure("GET /batches/{id} p99 during the 1-process drain", one.polls, one.idle),
        *_p99_figure(
            f"GET /batches/{{id}} p99 during the {many}-process drain",
            several.polls,
            several.idle,
            "≤ ×2",
        ),
        *_p99_figure(
            f"GET /healthz p99 during the {many}-process drain",
            several.health,
            several.idle_health,
        ),
    ]
    ours = _ours_ms(several)
    if ours is not None:
        cores = os.cpu_count() or 1
        allowed = cores * 1000 / ours
        figures.append(
            Figure(
                f"runs/s {cores} cores allow the workers and Postgres, the emulator's CPU left out",
                allowed,
                "runs/s",
                several.rate,
                "drained, the emulator's CPU in",
            )
        )
        notes.append(
            f"a note, not a baseline: {allowed:.0f} runs/s is ×{allowed / ISSUE_RATE:.1f} issue "
            f"13's {ISSUE_RATE} runs/s"
        )
    notes += [_cpu_note(f"{many}-process", several), _cpu_note("1-process", one)]
    report("drain: a backlog of 4-run batches, worker processes", figures, notes)


def _ours_ms(drain: Drain) -> float | None:
    """CPU milliseconds per run of what production runs too: the workers and Postgres (None
    when Postgres is not on this machine, or the drain ended before its CPU was counted)."""
    if "workers" not in drain.cpu_ms or "postgres" not in drain.cpu_ms:
        return None
    return drain.cpu_ms["workers"] + drain.cpu_ms["postgres"]


_CPU_NAMES = {
    "workers": "the workers",
    "postgres": "Postgres",
    "emulator": "the SQS emulator",
    "here": "this process (the API polled, the monitor)",
}


def _cpu_note(label: str, drain: Drain) -> str:
    if not drain.cpu_ms:
        return f"CPU per run, the {label} drain: not counted (it ended before {WARMED:.0%})"
    spent = ", ".join(f"{_CPU_NAMES[name]} {ms:.1f} ms" for name, ms in drain.cpu_ms.items())
    return f"CPU per run, the {label} drain, after the first {WARMED:.0%} of its batches: {spent}"
