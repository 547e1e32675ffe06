"""Money stays right: admission reserves a batch's estimated cost with the partner's row locked,
charging spends the reservation, failed runs and ended batches give theirs back, and the
database itself refuses a negative balance or available amount. Cancelling a batch — by the
operator, or by deactivating its org — charges only what completed."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import httpx
import pytest
from mypy_boto3_sqs import SQSClient
from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from app.context import AppContext
from app.db.models import EvaluationBatch, Partner, UsageLedgerEntry
from app.db.session import create_engine, create_session_factory
from app.settings import Settings
from devtools.embedded import run_worker_task
from devtools.emulator.server import EmulatorServer
from tests.db_checks import run_stats
from tests.factories import create_org, create_partner, expect, trigger, wait_for_batch
from tests.worker_support import (
    LANES,
    answered,
    held_calls,
    held_settings_for,
    running,
    wait_queue_empty,
)
from worker.runtime import Worker

PRICE = Decimal("0.05")


def money(
    balance: Decimal | int, reserved: Decimal | int, available: Decimal | int
) -> tuple[Decimal, Decimal, Decimal]:
    return Decimal(balance), Decimal(reserved), Decimal(available)


async def partner_money(
    api: httpx.AsyncClient, partner_id: str
) -> tuple[Decimal, Decimal, Decimal]:
    """(balance, reserved, available) as the API shows them."""
    partner = expect(await api.get(f"/partners/{partner_id}"), 200)
    return Decimal(partner["balance"]), Decimal(partner["reserved"]), Decimal(partner["available"])


async def ledger_total(context: AppContext, partner_id: str) -> tuple[int, Decimal]:
    async with context.sessions() as session:
        amounts = list(
            await session.scalars(
                select(UsageLedgerEntry.amount).where(
                    UsageLedgerEntry.partner_id == uuid.UUID(partner_id)
                )
            )
        )
    return len(amounts), sum(amounts, Decimal(0))


async def test_two_batches_admitted_at_once_against_a_balance_for_one(
    api: httpx.AsyncClient, context: AppContext
) -> None:
    partner_id = await create_partner(api, balance="1.50", price=str(PRICE))
    first = await create_org(api, partner_id, name="HubSpot")  # 30 runs = 1.50
    second = await create_org(api, partner_id, name="Pipedrive")

    responses = await asyncio.gather(
        api.post(f"/orgs/{first.org_id}/evaluations"),
        api.post(f"/orgs/{second.org_id}/evaluations"),
    )
    codes = sorted(response.status_code for response in responses)
    assert codes == [202, 402], [r.text for r in responses]
    [refused] = [r for r in responses if r.status_code == 402]
    assert refused.json() == {
        "error": "insufficient_balance",
        "detail": {
            "message": "the partner's balance cannot cover 30 run(s)",
            "required": "1.500000",
            "available": "0.000000",
        },
    }
    assert await partner_money(api, partner_id) == money(Decimal("1.5"), Decimal("1.5"), 0)

    [accepted] = [r.json() for r in responses if r.status_code == 202]
    async with run_worker_task(context):
        batch = await wait_for_batch(api, accepted["batch_id"])
    assert batch["status"] == "completed"
    assert (batch["charged_runs"], batch["charged_amount"], batch["reserved"]) == (
        30,
        "1.500000",
        "0.000000",
    )
    assert await partner_money(api, partner_id) == money(0, 0, 0)
    assert await ledger_total(context, partner_id) == (30, Decimal("1.5"))


async def test_ten_batches_admitted_at_once_take_what_the_balance_covers_and_no_more(
    api: httpx.AsyncClient, context: AppContext
) -> None:
    partner_id = await create_partner(api, balance="1.00", price=str(PRICE))
    orgs = [
        await create_org(api, partner_id, name=f"Org {n}", questions=3)  # 18 runs = 0.90
        for n in range(10)
    ]
    # 6 runs of 0.05 each: 0.30 a batch, so three fit in 1.00 and 0.10 is left.
    for setup in orgs:
        expect(await api.put(f"/orgs/{setup.org_id}/engines", json={"engines": ["openai"]}), 200)
    responses = await asyncio.gather(
        *(api.post(f"/orgs/{setup.org_id}/evaluations") for setup in orgs)
    )
    accepted = [r.json() for r in responses if r.status_code == 202]
    refused = [r.json() for r in responses if r.status_code == 402]
    assert (len(accepted), len(refused)) == (3, 7), [r.text for r in responses]
    for body in refused:
        assert body["detail"]["required"] == "0.300000"
        assert body["detail"]["available"] == "0.100000"
    assert await partner_money(api, partner_id) == money(
        Decimal("1"), Decimal("0.9"), Decimal("0.1")
    )

    async with run_worker_task(context):
        for body in accepted:
            assert (await wait_for_batch(api, body["batch_id"]))["status"] == "completed"
    assert await partner_money(api, partner_id) == money(Decimal("0.1"), 0, Decimal("0.1"))
    assert await ledger_total(context, partner_id) == (18, Decimal("0.9"))


async def test_failed_runs_give_their_share_back_and_the_ended_batch_the_rest(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    flaky = settings.model_copy(
        update={"simulated_failure_rate": 0.5, "run_max_attempts": 1, "max_failed_run_ratio": 1}
    )
    partner_id = await create_partner(api, balance="10.00", price=str(PRICE))
    setup = await create_org(api, partner_id)
    accepted = expect(await api.post(f"/orgs/{setup.org_id}/evaluations"), 202)
    assert await partner_money(api, partner_id) == money(10, Decimal("1.5"), Decimal("8.5"))
    async with AppContext.create(flaky) as context, run_worker_task(context):
        batch = await wait_for_batch(api, accepted["batch_id"])
        assert batch["status"] == "completed"
        assert 0 < batch["failed_runs"] < 30
        completed = batch["completed_runs"]
        assert (completed, batch["reserved"]) == (batch["charged_runs"], "0.000000")
        assert await ledger_total(context, partner_id) == (completed, completed * PRICE)
    assert await partner_money(api, partner_id) == money(
        10 - completed * PRICE,
        0,
        10 - completed * PRICE,
    )


async def test_a_resumed_batch_is_admitted_again_for_what_is_left(
    api: httpx.AsyncClient, context: AppContext, settings: Settings
) -> None:
    partner_id = await create_partner(api, balance="10.00", price=str(PRICE))
    setup = await create_org(api, partner_id)
    batch_id = await trigger(api, setup.org_id)
    failing = settings.model_copy(
        update={"simulated_failure_rate": 0.5, "run_max_attempts": 1, "max_failed_run_ratio": 0}
    )
    async with AppContext.create(failing) as flaky_context, run_worker_task(flaky_context):
        failed = await wait_for_batch(api, batch_id)
    assert failed["status"] == "failed"
    done = failed["completed_runs"]
    assert failed["charged_runs"] == done, "what was delivered is charged"
    assert await partner_money(api, partner_id) == money(10 - done * PRICE, 0, 10 - done * PRICE)

    resumed = expect(await api.post(f"/orgs/{setup.org_id}/evaluations"), 202)
    assert (resumed["batch_id"], resumed["status"]) == (batch_id, "pending")
    left = (30 - done) * PRICE
    assert await partner_money(api, partner_id) == money(10 - done * PRICE, left, 10 - 30 * PRICE)
    async with run_worker_task(context):
        batch = await wait_for_batch(api, batch_id)
    assert batch["status"] == "completed"
    assert batch["job_failures"] == 0
    assert await partner_money(api, partner_id) == money(10 - 30 * PRICE, 0, 10 - 30 * PRICE)
    assert await ledger_total(context, partner_id) == (30, 30 * PRICE)


async def test_the_worker_reserves_what_an_unreserved_batch_needs_or_fails_it(
    api: httpx.AsyncClient, context: AppContext
) -> None:
    """A batch admitted before reservations existed holds nothing: check_balance reserves for
    it, and fails it when the partner cannot cover it any more."""
    partner_id = await create_partner(api, balance="2.00", price=str(PRICE))
    setup = await create_org(api, partner_id)
    batch_id = await trigger(api, setup.org_id)
    async with context.sessions() as session:
        await session.execute(
            update(EvaluationBatch)
            .where(EvaluationBatch.id == uuid.UUID(batch_id))
            .values(reserved_amount=Decimal(0))
        )
        await session.execute(
            update(Partner)
            .where(Partner.id == uuid.UUID(partner_id))
            .values(balance=Decimal("0.5"), reserved=Decimal(0))
        )
        await session.commit()
    async with run_worker_task(context):
        refused = await wait_for_batch(api, batch_id)
    assert refused["status"] == "failed"
    assert refused["error"] == "insufficient_balance: required 1.500000, available 0.500000"
    assert [s["name"] for s in refused["steps"]][-1] == "mark_batch_failed"
    assert refused["charged_runs"] == 0
    assert await partner_money(api, partner_id) == money(Decimal("0.5"), 0, Decimal("0.5"))


@pytest.mark.parametrize("dialect", ["postgres", "sqlite"])
async def test_the_database_refuses_a_negative_balance_or_available_amount(
    dialect: str, postgres_url: str, sqlite_url: str
) -> None:
    url = postgres_url if dialect == "postgres" else sqlite_url
    engine = create_engine(Settings(database_url=SecretStr(url)))
    sessions = create_session_factory(engine)
    try:
        async with sessions() as session:
            partner = Partner(
                name="p", balance=Decimal("1.5"), reserved=Decimal(0), price_per_run=PRICE
            )
            session.add(partner)
            await session.commit()
        for change in (
            {"balance": Decimal("-0.000001")},
            {"reserved": Decimal("-1")},
            {"reserved": Decimal("1.500001")},
        ):
            async with sessions() as session:
                refused = update(Partner).where(Partner.id == partner.id).values(**change)
                with pytest.raises(IntegrityError, match="ck_partners_"):
                    await session.execute(refused)
        async with sessions() as session:
            await session.execute(
                update(Partner).where(Partner.id == partner.id).values(reserved=Decimal("1.5"))
            )
            await session.commit()
            stored = await session.get_one(Partner, partner.id, populate_existing=True)
            assert (stored.balance, stored.reserved) == (Decimal("1.5"), Decimal("1.5"))
    finally:
        await engine.dispose()


# ---------------------------------------------------------------------------------------------
# Cancelling: by the operator, or by deactivating the org
# ---------------------------------------------------------------------------------------------


async def test_cancelling_a_pending_batch_ends_it_at_once_and_releases_its_reservation(
    api: httpx.AsyncClient, context: AppContext, settings: Settings, sqs: SQSClient
) -> None:
    partner_id = await create_partner(api, balance="10.00", price=str(PRICE))
    setup = await create_org(api, partner_id)
    batch_id = await trigger(api, setup.org_id)

    cancelled = expect(await api.post(f"/batches/{batch_id}/cancel"), 200)
    assert cancelled["status"] == "cancelled"
    assert cancelled["error"] == "cancelled_by_operator: cancelled by the operator"
    assert (cancelled["cancelled_runs"], cancelled["charged_runs"]) == (30, 0)
    assert cancelled["reserved"] == "0.000000"
    assert await partner_money(api, partner_id) == money(10, 0, 10)

    again = await api.post(f"/batches/{batch_id}/cancel")
    assert again.status_code == 409
    assert again.json()["error"] == "batch_finished"
    missing = await api.post(f"/batches/{uuid.uuid4()}/cancel")
    assert missing.status_code == 404
    # Today's batch is cancelled: triggering again returns it, sending no job.
    retriggered = expect(await api.post(f"/orgs/{setup.org_id}/evaluations"), 202)
    assert (retriggered["batch_id"], retriggered["status"]) == (batch_id, "cancelled")

    # The job already queued finds the batch ended, does nothing, and is deleted.
    async with run_worker_task(context):
        await wait_queue_empty(sqs, str(settings.sqs_queue_url))
    stats = await run_stats(context, batch_id)
    assert (stats["cancelled"], stats["ledger"], stats["max_attempts"]) == (30, 0, 0)


async def test_only_the_operator_cancels(api: httpx.AsyncClient) -> None:
    partner_id = await create_partner(api, balance="10.00", price=str(PRICE))
    setup = await create_org(api, partner_id, questions=1)
    batch_id = await trigger(api, setup.org_id)
    key = expect(await api.post(f"/partners/{partner_id}/api-keys", json={}), 201)["key"]
    response = await api.post(
        f"/batches/{batch_id}/cancel", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert expect(await api.get(f"/batches/{batch_id}"), 200)["status"] == "pending"


@pytest.mark.parametrize("how", ["operator", "org_deactivated"])
async def test_a_batch_stopped_mid_run_finishes_its_runs_in_flight_and_charges_only_those(
    how: str,
    api: httpx.AsyncClient,
    context: AppContext,
    postgres_url: str,
    queue_url: str,
    sqs_endpoint: str,
    emulator: EmulatorServer,
) -> None:
    settings = held_settings_for(postgres_url, queue_url, sqs_endpoint, emulator)
    partner_id = await create_partner(api, balance="10.00", price=str(PRICE))
    setup = await create_org(api, partner_id, engines=("openai",))  # 10 runs
    batch_id = await trigger(api, setup.org_id)
    async with AppContext.create(settings) as worker_context, running(Worker(worker_context)):
        await held_calls(emulator, LANES)
        if how == "operator":
            stopping = expect(await api.post(f"/batches/{batch_id}/cancel"), 200)
        else:
            expect(await api.patch(f"/orgs/{setup.org_id}", json={"active": False}), 200)
            stopping = expect(await api.get(f"/batches/{batch_id}"), 200)
        # Runs are in flight: the batch ends once they have.
        assert stopping["status"] == "running"
        assert stopping["cancel_requested_at"] is not None
        emulator.state.release()
        batch = await wait_for_batch(api, batch_id, statuses=("cancelled",))

    reason = (
        "cancelled_by_operator: cancelled by the operator"
        if how == "operator"
        else "org_deactivated: the org was deactivated while the batch ran"
    )
    assert batch["error"] == reason
    assert (batch["completed_runs"], batch["charged_runs"]) == (LANES, LANES)
    assert batch["cancelled_runs"] == 10 - LANES
    assert sum(answered(emulator).values()) == LANES, "nothing asked after the cancel"
    assert batch["reserved"] == "0.000000"
    charged = LANES * PRICE
    assert await partner_money(api, partner_id) == money(10 - charged, 0, 10 - charged)
    assert await ledger_total(context, partner_id) == (LANES, charged)
