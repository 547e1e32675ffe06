"""`senso enqueue-all` as a scheduled task runs it: a real process against Postgres and SQS."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from dataclasses import dataclass

import httpx
import pytest
from mypy_boto3_sqs import SQSClient
from sqlalchemy import select

from app.context import AppContext
from app.db.models import AuditEvent
from app.evaluations.schedule import Pacer
from app.settings import Settings
from tests.clock import ManualClock
from tests.factories import create_org, create_partner, expect
from tests.processes import REPO_ROOT, worker_environment

# Runs processes of its own: never beside another test that does (see pyproject.toml).
pytestmark = pytest.mark.xdist_group("processes")


@dataclass(frozen=True, slots=True)
class Finished:
    returncode: int
    lines: list[str]
    stderr: str


async def enqueue_all(
    settings: Settings, *args: str, env: dict[str, str] | None = None
) -> Finished:
    """`senso enqueue-all` with the test's settings; none of the caller's leak in."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "senso",
        "enqueue-all",
        *args,
        cwd=REPO_ROOT,
        env=worker_environment(settings, **(env or {})),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Finished(process.returncode, stdout.decode().splitlines(), stderr.decode())


def line_of(finished: Finished, org_id: str) -> str:
    [line] = [line for line in finished.lines if f"  {org_id}  " in line]
    return line


def take_all_jobs(sqs: SQSClient, queue_url: str) -> list[dict[str, str]]:
    """Every job on the queue, however many receives it takes."""
    jobs: list[dict[str, str]] = []
    while batch := take_jobs(sqs, queue_url):
        jobs.extend(batch)
    return jobs


def take_jobs(sqs: SQSClient, queue_url: str) -> list[dict[str, str]]:
    """Every job on the queue (deleted once read), with its SentTimestamp as `sent_ms`."""
    messages = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["SentTimestamp"]
    ).get("Messages", [])
    for message in messages:
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return [
        {**json.loads(m["Body"]), "sent_ms": m.get("Attributes", {})["SentTimestamp"]}
        for m in messages
    ]


async def test_every_org_gets_todays_batch_once(
    api: httpx.AsyncClient, context: AppContext, settings: Settings, sqs: SQSClient
) -> None:
    funded = await create_partner(api, balance="100.00")
    ready = await create_org(api, funded, questions=2, name="Ready")
    triggered = await create_org(api, funded, questions=1, name="Triggered")
    empty = await create_org(api, funded, questions=0, name="Empty")
    inactive = await create_org(api, funded, questions=1, name="Inactive")
    expect(await api.patch(f"/orgs/{inactive.org_id}", json={"active": False}), 200)
    broke = await create_org(api, await create_partner(api, balance="0.01"), name="Broke")
    earlier = expect(await api.post(f"/orgs/{triggered.org_id}/evaluations", json={}), 202)

    first = await enqueue_all(settings)

    assert first.returncode == 0, first.stderr
    assert first.lines[-1] == "5 orgs: 1 enqueued, 1 existing, 3 skipped, 0 failed"
    assert line_of(first, ready.org_id).startswith("enqueued")
    assert line_of(first, ready.org_id).endswith(f", {ready.runs} runs")
    assert line_of(first, triggered.org_id).endswith(
        f"today's batch {earlier['batch_id']} is pending"
    )
    assert "empty_matrix: " in line_of(first, empty.org_id)
    assert "org_inactive: " in line_of(first, inactive.org_id)
    assert "insufficient_balance: required 1.5" in line_of(first, broke.org_id)

    [batch] = expect(await api.get(f"/orgs/{ready.org_id}/batches"), 200)["items"]
    assert batch["triggered_by"] == "scheduler"
    assert batch["total_runs"] == ready.runs
    jobs = take_jobs(sqs, str(settings.sqs_queue_url))
    assert sorted((job["batch_id"], job["reason"]) for job in jobs) == sorted(
        [(batch["batch_id"], "scheduler"), (earlier["batch_id"], "api")]
    )
    async with context.sessions() as session:
        actors = await session.scalars(
            select(AuditEvent.actor).where(AuditEvent.resource_id == batch["batch_id"])
        )
        assert list(actors) == ["scheduler"]

    again = await enqueue_all(settings)

    assert again.returncode == 0, again.stderr
    assert again.lines[-1] == "5 orgs: 0 enqueued, 2 existing, 3 skipped, 0 failed"
    assert take_jobs(sqs, str(settings.sqs_queue_url)) == []


async def test_jobs_go_out_in_batches_and_never_more_than_the_cap_in_a_second(
    api: httpx.AsyncClient, settings: Settings, sqs: SQSClient
) -> None:
    partner = await create_partner(api)
    for n in range(7):
        await create_org(api, partner, questions=1, engines=("openai",), name=f"Org {n}")

    finished = await enqueue_all(settings, "--max-per-second", "3")

    assert finished.returncode == 0, finished.stderr
    assert finished.lines[-1] == "7 orgs: 7 enqueued, 0 existing, 0 skipped, 0 failed"
    sent_ms = sorted(int(job["sent_ms"]) for job in take_all_jobs(sqs, str(settings.sqs_queue_url)))
    assert len(sent_ms) == 7
    # Three jobs a call (3, 3 and 1), the calls a second apart: any job and the third after it
    # are a second apart, less what a call's own latency shifts its stamp (an unpaced run
    # sends all seven within a few milliseconds).
    gaps = [sent_ms[n + 3] - sent_ms[n] for n in range(len(sent_ms) - 3)]
    assert min(gaps) >= 900, sent_ms


async def test_an_unsent_job_fails_the_run_and_leaves_the_batch_to_the_reconciler(
    api: httpx.AsyncClient, settings: Settings, sqs_endpoint: str
) -> None:
    setup = await create_org(api, await create_partner(api), questions=1)
    missing_queue = f"{sqs_endpoint}/123456789012/missing-{uuid.uuid4().hex[:8]}"

    finished = await enqueue_all(settings, env={"SQS_QUEUE_URL": missing_queue})

    assert finished.returncode == 1
    assert line_of(finished, setup.org_id).startswith("failed")
    assert "the reconciler resends it" in line_of(finished, setup.org_id)
    assert finished.lines[-1] == "1 orgs: 0 enqueued, 0 existing, 0 skipped, 1 failed"
    [batch] = expect(await api.get(f"/orgs/{setup.org_id}/batches"), 200)["items"]
    assert batch["status"] == "pending"


async def test_refuses_to_run_without_a_queue(settings: Settings) -> None:
    finished = await enqueue_all(settings, env={"SQS_QUEUE_URL": ""})

    assert finished.returncode == 2
    assert "SQS_QUEUE_URL must be set" in finished.stderr


async def test_pacer_spaces_calls_without_a_burst() -> None:
    clock = ManualClock()
    pacer = Pacer(4, clock)
    await pacer.wait()  # the first call goes at once
    second = asyncio.create_task(pacer.wait())
    await clock.wait_for_sleepers(1)
    assert clock.next_wake() == pytest.approx(0.25)
    clock.advance(0.25)
    await second
    clock.advance(0.1)
    third = asyncio.create_task(pacer.wait())
    await clock.wait_for_sleepers(1)
    assert clock.next_wake() == pytest.approx(0.15)
    clock.advance(0.15)
    await third
    clock.advance(1.0)
    await pacer.wait()  # long enough since the last: no wait
    assert clock.sleepers == 0


async def test_help_and_a_rate_that_is_not_positive(settings: Settings) -> None:
    helped = await enqueue_all(settings, "--help")
    refused = await enqueue_all(settings, "--max-per-second", "0")

    assert helped.returncode == 0
    assert helped.lines[0].startswith("usage: senso enqueue-all")
    assert refused.returncode == 2
    assert "--max-per-second: must be greater than 0" in refused.stderr
