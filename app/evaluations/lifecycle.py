"""How a batch ends — completed, failed or cancelled — and how a cancel is asked for.

A batch ends in one transaction with its money settled: completed runs are charged, runs never
asked of a cancelled batch are marked cancelled, and the reservation left is given back.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import record_audit
from app.db.clock import db_now
from app.db.models import (
    BatchStatus,
    EvaluationBatch,
    Org,
    Partner,
    QuestionRun,
    RunStatus,
)
from app.db.types import MONEY_PLACES
from app.errors import ConflictError
from app.evaluations.billing import (
    charge_completed_runs,
    lock_batch,
    lock_partner,
    release_all,
)
from app.evaluations.runs import RunTotals, in_flight, store_totals
from app.evaluations.summaries import store_summary
from app.evaluations.trends import changes
from app.webhooks.outbox import (
    Endpoints,
    emit_event,
    partner_endpoints,
    stable_event_id,
    subscribed_to,
)

LIVE = (BatchStatus.PENDING, BatchStatus.RUNNING)
# The windows a completed batch's metric.changed events compare (GET /changes?window=7).
CHANGE_WINDOW_DAYS = 7
MAX_BATCH_ERROR = 500

_ACTIONS = {
    BatchStatus.COMPLETED: "batch.completed",
    BatchStatus.FAILED: "batch.failed",
    BatchStatus.CANCELLED: "batch.cancelled",
}
# What partners' webhooks are told of when a batch ends.
_EVENTS = {BatchStatus.COMPLETED: "batch.completed", BatchStatus.FAILED: "batch.failed"}


@dataclass(frozen=True, slots=True)
class Ended:
    """A batch this call ended, and how many webhook deliveries its ending wrote: they are
    sent once the transaction is committed (none to send, no outbox pass)."""

    deliveries: int


async def finish_batch(
    session: AsyncSession,
    batch_id: uuid.UUID,
    status: BatchStatus,
    *,
    error: str | None,
    actor: str,
    now: datetime,
    details: dict[str, Any] | None = None,
    org: Org | None = None,
) -> Ended | None:
    """Move a live batch to `status`, settling its money; None when it had already ended.
    `org`, the batch's, when the caller has it at hand.

    Leaves the transaction for the caller to commit.
    """
    partner_id = org.partner_id if org is not None else await partner_of(session, batch_id)
    partner = await lock_partner(session, partner_id)
    batch = await lock_batch(session, batch_id)
    if batch.status not in LIVE:
        return None
    return await finish_locked(
        session, partner, batch, status, error=error, actor=actor, now=now, details=details, org=org
    )


async def finish_locked(
    session: AsyncSession,
    partner: Partner,
    batch: EvaluationBatch,
    status: BatchStatus,
    *,
    error: str | None,
    actor: str,
    now: datetime,
    details: dict[str, Any] | None = None,
    org: Org | None = None,
    totals: RunTotals | None = None,
) -> Ended:
    """`finish_batch` of a live batch whose partner and batch rows the caller has locked, in
    that order; `totals`, its runs' (`run_totals`), when the caller has just read them."""
    charged = await charge_completed_runs(session, partner, batch, actor, now)
    if totals is not None:
        totals = totals.with_charges(charged, batch.price_per_run * charged)
    if status == BatchStatus.CANCELLED:
        await session.execute(
            update(QuestionRun)
            .where(
                QuestionRun.batch_id == batch.id,
                QuestionRun.status.in_([RunStatus.PENDING, RunStatus.RUNNING]),
            )
            .values(status=RunStatus.CANCELLED, claimed_by=None, lease_expires_at=None)
        )
        totals = None
    release_all(partner, batch)
    batch.status = status
    batch.error = error[:MAX_BATCH_ERROR] if error else None
    batch.completed_at = now
    record_audit(
        session,
        actor=actor,
        action=_ACTIONS[status],
        resource_type="batch",
        resource_id=batch.id,
        details=details or {},
    )
    # What its reads serve from now on, and the cells its trends read, in the same commit.
    totals = await store_totals(session, batch, totals)
    await store_summary(session, batch, now, org)
    deliveries = 0
    if status in _EVENTS:
        endpoints = await partner_endpoints(session, partner.id)
        deliveries += await _emit_batch_event(
            session, batch, partner.id, _EVENTS[status], endpoints, totals
        )
        if status == BatchStatus.COMPLETED:
            deliveries += await _emit_metric_changes(session, batch, partner.id, endpoints)
    await session.flush()
    return Ended(deliveries)


async def _emit_metric_changes(
    session: AsyncSession, batch: EvaluationBatch, partner_id: uuid.UUID, endpoints: Endpoints
) -> int:
    """`metric.changed` for each change verdict up or down now this batch has completed: the
    last CHANGE_WINDOW_DAYS up to its date against the days before, as GET /changes says.
    Worked out only for a partner with an endpoint that wants it: the comparison reads two
    windows of cells and bootstraps every metric, engine and country."""
    subscribed = subscribed_to(endpoints, "metric.changed")
    if not subscribed:
        return 0
    deliveries = 0
    found = await changes(session, batch.org_id, CHANGE_WINDOW_DAYS, batch.batch_date)
    for metric, scopes in found.metrics.items():
        compared = [
            ("overall", "", scopes.overall),
            *(("engine", key, change) for key, change in scopes.by_engine.items()),
            *(("location", key, change) for key, change in scopes.by_location.items()),
        ]
        for scope, key, change in compared:
            if change.verdict == "within_noise":
                continue
            emitted = await emit_event(
                session,
                partner_id=partner_id,
                type="metric.changed",
                endpoints=subscribed,
                payload={
                    "org_id": str(batch.org_id),
                    "batch_id": str(batch.id),
                    "batch_date": batch.batch_date.isoformat(),
                    "metric": metric,
                    "scope": scope,
                    "key": key or None,
                    "window_days": found.window,
                    "current_window": found.current.model_dump(mode="json"),
                    "previous_window": found.previous.model_dump(mode="json"),
                    **change.model_dump(mode="json"),
                },
                event_id=stable_event_id("metric.changed", batch.id, metric, scope, key),
            )
            deliveries += len(subscribed) if emitted else 0
    return deliveries


async def _emit_batch_event(
    session: AsyncSession,
    batch: EvaluationBatch,
    partner_id: uuid.UUID,
    event_type: str,
    endpoints: Endpoints,
    totals: RunTotals,
) -> int:
    """Tell the partner's webhooks, in the transaction that ended the batch; the deliveries
    written."""
    subscribed = subscribed_to(endpoints, event_type)
    if not subscribed:
        # An event is kept only for its deliveries: with no endpoint that wants it, there is
        # nothing to write.
        return 0
    emitted = await emit_event(
        session,
        partner_id=partner_id,
        type=event_type,
        endpoints=subscribed,
        payload={
            "batch_id": str(batch.id),
            "org_id": str(batch.org_id),
            "batch_date": batch.batch_date.isoformat(),
            "status": batch.status.value,
            "total_runs": totals.runs,
            "completed_runs": totals.completed,
            "failed_runs": totals.failed,
            "charged_amount": str(totals.charged_amount.quantize(MONEY_PLACES)),
            "error": batch.error,
        },
        # One event per ending: a failed batch may be resumed, and then end again.
        event_id=stable_event_id(event_type, batch.id, batch.completed_at),
    )
    return len(subscribed) if emitted else 0


async def request_cancel(
    session: AsyncSession, batch: EvaluationBatch, reason: str, *, actor: str, now: datetime
) -> None:
    """Stop a live batch: no new run is claimed; the runs in flight finish (their worker then
    ends the batch as cancelled); with none in flight it ends here and now.

    Leaves the transaction for the caller to commit.
    """
    # Partner, then batch: the order every writer of these rows locks them in.
    await lock_partner(session, await partner_of(session, batch.id))
    batch = await lock_batch(session, batch.id)
    if batch.status not in LIVE:
        raise ConflictError(
            f"batch {batch.id} has already ended ({batch.status.value})", code="batch_finished"
        )
    if batch.cancel_requested_at is not None:
        return
    await session.execute(
        update(EvaluationBatch)
        .where(EvaluationBatch.id == batch.id)
        .values(cancel_requested_at=db_now(), error=reason[:MAX_BATCH_ERROR])
    )
    record_audit(
        session,
        actor=actor,
        action="batch.cancel_requested",
        resource_type="batch",
        resource_id=batch.id,
        details={"reason": reason},
    )
    held = await session.scalar(
        select(QuestionRun.id).where(QuestionRun.batch_id == batch.id, in_flight()).limit(1)
    )
    if held is None:
        await finish_batch(
            session,
            batch.id,
            BatchStatus.CANCELLED,
            error=reason,
            actor=actor,
            now=now,
            details={"reason": reason},
        )


async def partner_of(session: AsyncSession, batch_id: uuid.UUID) -> uuid.UUID:
    partner_id = await session.scalar(
        select(Org.partner_id)
        .join(EvaluationBatch, EvaluationBatch.org_id == Org.id)
        .where(EvaluationBatch.id == batch_id)
    )
    if partner_id is None:
        raise RuntimeError(f"batch {batch_id} vanished")
    return partner_id
