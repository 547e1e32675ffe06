"""Reading the audit trail: newest first, filtered, a page at a time behind an opaque cursor.

A partner sees the events of its own resources: itself (its keys and top-ups are recorded on
it), its orgs, and their batches; the operator sees everything.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, String, and_, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auditlog.schemas import AuditEventPage, AuditEventRead
from app.auth import Principal
from app.db.models import AuditEvent, EvaluationBatch, Org
from app.errors import InvalidInputError


@dataclass(frozen=True, slots=True)
class AuditFilters:
    resource_type: str | None = None
    resource_id: str | None = None
    actor: str | None = None
    action: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


async def list_audit_events(
    session: AsyncSession,
    principal: Principal,
    filters: AuditFilters,
    limit: int,
    cursor: str | None,
) -> AuditEventPage:
    query = select(AuditEvent)
    for column, value in (
        (AuditEvent.resource_type, filters.resource_type),
        (AuditEvent.resource_id, filters.resource_id),
        (AuditEvent.actor, filters.actor),
        (AuditEvent.action, filters.action),
    ):
        if value is not None:
            query = query.where(column == value)
    if filters.since is not None:
        query = query.where(AuditEvent.occurred_at >= filters.since)
    if filters.until is not None:
        query = query.where(AuditEvent.occurred_at < filters.until)
    if principal.partner_id is not None:
        query = query.where(_owned_by(session, principal.partner_id))
    if cursor is not None:
        at, event_id = decode_cursor(cursor)
        query = query.where(
            or_(
                AuditEvent.occurred_at < at,
                and_(AuditEvent.occurred_at == at, AuditEvent.id < event_id),
            )
        )
    rows = list(
        await session.scalars(
            query.order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc()).limit(limit + 1)
        )
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditEventPage(
        items=[AuditEventRead.model_validate(row) for row in rows],
        limit=limit,
        next_cursor=encode_cursor(rows[-1]) if more and rows else None,
    )


def _owned_by(session: AsyncSession, partner_id: uuid.UUID) -> ColumnElement[bool]:
    as_text = _uuid_text(session)
    orgs = select(as_text(Org.id)).where(Org.partner_id == partner_id)
    batches = (
        select(as_text(EvaluationBatch.id))
        .join(Org, Org.id == EvaluationBatch.org_id)
        .where(Org.partner_id == partner_id)
    )
    return or_(
        and_(AuditEvent.resource_type == "partner", AuditEvent.resource_id == str(partner_id)),
        and_(AuditEvent.resource_type == "org", AuditEvent.resource_id.in_(orgs)),
        and_(AuditEvent.resource_type == "batch", AuditEvent.resource_id.in_(batches)),
    )


def _uuid_text(session: AsyncSession) -> Callable[[Any], ColumnElement[str]]:
    """A UUID column as the text audit rows keep (`str(uuid)`): SQLite stores 32 hex digits."""
    if session.get_bind().dialect.name != "sqlite":
        return lambda column: cast(column, String)

    def hyphenated(column: Any) -> ColumnElement[str]:
        hexed = func.lower(cast(column, String))
        parts = [func.substr(hexed, start, length) for start, length in _UUID_GROUPS]
        joined: ColumnElement[str] = parts[0]
        for part in parts[1:]:
            joined = joined.concat("-").concat(part)
        return joined

    return hyphenated


_UUID_GROUPS = ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))


def encode_cursor(event: AuditEvent) -> str:
    raw = json.dumps([event.occurred_at.isoformat(), str(event.id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, event_id = json.loads(raw)
        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None:
            raise ValueError("naive")
        return moment, uuid.UUID(event_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(
            "cursor is not one this API gave out", code="invalid_cursor"
        ) from exc
