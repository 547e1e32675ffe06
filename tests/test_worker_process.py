"""`senso worker` as a real process: SIGTERM drains (stops claiming at once, lets in-flight runs
finish or hands them back), releases the message, and the log lines carry the job's ids."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections import Counter
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from mypy_boto3_sqs import SQSClient
from sqlalchemy import select

from app.context import AppContext
from app.db.models import QuestionRun
from app.settings import Settings
from devtools.embedded import run_worker_task
from tests.db_checks import balance, run_stats
from tests.factories import create_org, create_partner, expect, trigger, wait_for_batch
from tests.processes import WorkerProcess, worker_environment, worker_process
from tests.worker_support import eventually, queue_counts, run_rows, wait_queue_empty

# Runs processes of its own: never beside another test that does (see pyproject.toml).
pytestmark = pytest.mark.xdist_group("processes")

PRICE = Decimal("0.05")
START_BALANCE = Decimal("10.00")
# Slow engines and one run per engine lane, so a SIGTERM lands mid-job.
SUBPROCESS_LATENCY_MS = 400
SUBPROCESS_RUN_CONCURRENCY = 1
ENGINES = 3  # a lane per engine: at most this many runs in flight


def subprocess_environment(settings: Settings, **overrides: str) -> dict[str, str]:
    return worker_environment(
        settings,
        SIMULATED_LATENCY_MS=str(SUBPROCESS_LATENCY_MS),
        RUN_CONCURRENCY=str(SUBPROCESS_RUN_CONCURRENCY),
        **overrides,
    )


async def wait_for_completed_runs(
    context: AppContext, batch_id: str, worker: WorkerProcess, *, at_least: int
) -> None:
    async def progressed() -> bool:
        assert worker.process.returncode is None, (
            f"worker exited early ({worker.process.returncode}):\n{worker.output()}"
        )
        return (await run_stats(context, batch_id))["completed"] >= at_least

    await eventually(progressed, limit=30, what=f"{at_least} completed runs")


async def sigterm_and_wait(worker: WorkerProcess, *, limit: float) -> int:
    worker.process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(worker.process.wait(), limit)
    except TimeoutError:
        raise AssertionError(
            f"worker still running {limit}s after SIGTERM:\n{worker.output()}"
        ) from None


def assert_job_lines_carry_ids(
    lines: list[dict[str, Any]], *, org_id: str, batch_id: str, sqs_message_id: str
) -> None:
    """Every line written while a job ran (pipeline and step events) names org, batch, message."""
    job_lines = [
        line for line in lines if str(line.get("logger", "")).startswith("app.evaluations")
    ]
    assert job_lines, "no job event was logged"
    assert {line["msg"] for line in job_lines} >= {"step started", "step completed"}
    for line in job_lines:
        assert line.get("org_id") == org_id, line
        assert line.get("batch_id") == batch_id, line
        assert line.get("sqs_message_id") == sqs_message_id, line
    started = {line["step"] for line in job_lines if line["msg"] == "step started"}
    assert {"get_or_create_batch", "check_balance", "start_batch", "run_question_matrix"} <= started
    assert all(line["level"] in {"DEBUG", "INFO", "WARNING", "ERROR"} for line in lines)
    assert any(line["msg"] == "worker started" for line in lines)
    assert any(line["msg"] == "stop requested; draining" for line in lines)
    assert any(line["msg"] == "worker stopped" for line in lines)


def thread_nice_values(pid: int) -> set[int]:
    """The Linux nice value of each of the process's threads (field 19 of each task's stat)."""
    values = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        after_command = (task / "stat").read_text().rsplit(")", 1)[1].split()
        values.add(int(after_command[16]))
    return values


async def receive_released(sqs: SQSClient, queue_url: str) -> dict[str, Any]:
    """The job's message, visible again at once; received here and made visible again."""
    received = await asyncio.to_thread(
        sqs.receive_message,
        QueueUrl=queue_url,
        MaxNumberOfMessages=1,
        WaitTimeSeconds=0,
        MessageSystemAttributeNames=["ApproximateReceiveCount"],
    )
    [message] = received["Messages"]
    await asyncio.to_thread(
        sqs.change_message_visibility,
        QueueUrl=queue_url,
        ReceiptHandle=message["ReceiptHandle"],
        VisibilityTimeout=0,
    )
    return dict(message)


async def test_sigterm_without_a_drain_hands_runs_back_and_a_new_worker_finishes(
    api: httpx.AsyncClient, context: AppContext, settings: Settings, sqs: SQSClient
) -> None:
    partner_id = await create_partner(api, balance=str(START_BALANCE), price=str(PRICE))
    setup = await create_org(api, partner_id)  # 5 questions x 3 engines x 2 locations
    assert setup.runs == 30
    batch_id = await trigger(api, setup.org_id)
    queue_url = str(settings.sqs_queue_url)

    # No drain period: the runs in flight are cut short and handed back at once.
    env = subprocess_environment(settings, WORKER_DRAIN_SECONDS="0")
    async with worker_process(env) as worker:
        await wait_for_completed_runs(context, batch_id, worker, at_least=2)
        code = await sigterm_and_wait(worker, limit=15)
    assert code == 0, worker.output()
    lines = worker.json_lines()
    assert any(line["msg"] == "drain period over; releasing unfinished jobs" for line in lines)

    # The message was released (visibility 0): visible again at once, nothing in flight.
    assert await queue_counts(sqs, queue_url) == (1, 0)
    message = await receive_released(sqs, queue_url)
    assert json.loads(message["Body"])["batch_id"] == batch_id
    assert message["Attributes"]["ApproximateReceiveCount"] == "2"  # the worker's, then ours
    assert_job_lines_carry_ids(
        lines, org_id=setup.org_id, batch_id=batch_id, sqs_message_id=message["MessageId"]
    )

    # Unfinished runs were handed back: none is left `running` under the dead worker's lease.
    before = await run_rows(context, batch_id)
    statuses = Counter(status for status, _ in before.values())
    assert statuses["running"] == 0, statuses
    assert statuses["failed"] == 0, statuses
    assert statuses["completed"] >= 2, statuses
    assert statuses["pending"] > 0, f"the job finished before SIGTERM landed: {statuses}"
    assert statuses["completed"] + statuses["pending"] == 30
    released = {
        run for run, (status, attempts) in before.items() if status == "pending" and attempts
    }
    assert len(released) <= ENGINES * SUBPROCESS_RUN_CONCURRENCY, "only in-flight runs repeat"
    stats = await run_stats(context, batch_id)
    assert stats["ledger"] == 0
    assert await balance(context, partner_id) == START_BALANCE
    interrupted = expect(await api.get(f"/batches/{batch_id}"), 200)
    assert interrupted["status"] == "running", interrupted
    assert interrupted["job_failures"] == 0, "a drain is not a failure"

    # A fresh worker picks the released message up and finishes the batch, repeating nothing.
    async with run_worker_task(context):
        batch = await wait_for_batch(api, batch_id, limit=30)
        await wait_queue_empty(sqs, queue_url)
    assert batch["status"] == "completed", batch
    after = await run_rows(context, batch_id)
    assert {status for status, _ in after.values()} == {"completed"}
    for run, (_, attempts) in after.items():
        assert attempts == (2 if run in released else 1), (run, attempts, run in released)
    stats = await run_stats(context, batch_id)
    assert stats["total"] == stats["completed"] == stats["ledger"] == 30
    assert await balance(context, partner_id) == START_BALANCE - 30 * PRICE


async def test_sigterm_stops_claiming_at_once_and_lets_runs_in_flight_finish(
    api: httpx.AsyncClient, context: AppContext, settings: Settings, sqs: SQSClient
) -> None:
    partner_id = await create_partner(api, balance=str(START_BALANCE), price=str(PRICE))
    setup = await create_org(api, partner_id)
    batch_id = await trigger(api, setup.org_id)
    queue_url = str(settings.sqs_queue_url)

    env = subprocess_environment(settings, WORKER_DRAIN_SECONDS="30", WORKER_NICE="7")
    async with worker_process(env) as worker:
        await wait_for_completed_runs(context, batch_id, worker, at_least=1)
        # Every thread runs at WORKER_NICE, those started for SQS calls and metrics included
        # (never above this test's own nice value, which it inherits).
        nice = max(7, os.getpriority(os.PRIO_PROCESS, 0))
        threads = thread_nice_values(worker.process.pid)
        assert threads == {nice}, threads
        code = await sigterm_and_wait(worker, limit=20)
    assert code == 0, worker.output()
    lines = worker.json_lines()
    [stop] = [line for line in lines if line["msg"] == "stop requested; draining"]
    stopped_at = datetime.fromisoformat(stop["ts"])

    # Nothing was claimed after the stop; what was in flight finished (a long drain).
    async with context.sessions() as session:
        claimed: list[datetime] = list(
            await session.scalars(
                select(QuestionRun.started_at).where(
                    QuestionRun.batch_id == uuid.UUID(batch_id),
                    QuestionRun.started_at.is_not(None),
                )
            )
        )
    assert claimed, "no run was claimed"
    assert all(started <= stopped_at for started in claimed), (stopped_at, max(claimed))
    statuses = Counter(status for status, _ in (await run_rows(context, batch_id)).values())
    assert (statuses["running"], statuses["failed"]) == (0, 0), statuses
    # What was in flight finished; a claim the stop overtook was handed back unasked (at most
    # one per engine lane).
    assert len(claimed) - ENGINES <= statuses["completed"] <= len(claimed), statuses
    assert statuses["pending"] == 30 - statuses["completed"] > 0, statuses
    assert not any(line["msg"].startswith("drain period over") for line in lines)
    assert any(line["msg"] == "job interrupted; message released" for line in lines)

    # The job was released for another worker (not deleted, not failed).
    assert await queue_counts(sqs, queue_url) == (1, 0)
    batch = expect(await api.get(f"/batches/{batch_id}"), 200)
    assert (batch["status"], batch["job_failures"]) == ("running", 0), batch
    assert batch["charged_runs"] == 0
    assert Decimal(batch["reserved"]) == 30 * PRICE
