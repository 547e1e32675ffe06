from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from app.api.deps import CurrentPrincipal, Session
from app.auditlog import service
from app.auditlog.schemas import AuditEventPage
from app.schemas import Label, ShortLabel

router = APIRouter(tags=["audit"])

MAX_AUDIT_PAGE = 200


@router.get("/audit-events", responses={422: {"description": "Invalid filter or cursor"}})
async def list_audit_events(
    session: Session,
    principal: CurrentPrincipal,
    resource_type: Annotated[ShortLabel | None, Query(max_length=64)] = None,
    resource_id: Annotated[ShortLabel | None, Query(max_length=64)] = None,
    actor: Annotated[Label | None, Query()] = None,
    action: Annotated[ShortLabel | None, Query()] = None,
    since: Annotated[AwareDatetime | None, Query(description="Events at or after")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Events before")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_AUDIT_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> AuditEventPage:
    """The audit trail, newest first: management changes, batch status changes and charges,
    and events other services sent to the audit queue. A partner key sees its own
    resources' events (itself, its orgs, their batches)."""
    filters = service.AuditFilters(resource_type, resource_id, actor, action, since, until)
    return await service.list_audit_events(session, principal, filters, limit, cursor)
