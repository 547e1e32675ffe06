"""The audit trail: written in the same transaction as the change it describes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import AuditEvent


def record_audit(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    resource_type: str,
    resource_id: object,
    details: dict[str, Any] | None = None,
) -> None:
    session.add(
        AuditEvent(
            actor=actor,
            action=action,
            resource_type=resource_type,
            resource_id=str(resource_id),
            details=details or {},
        )
    )


async def insert_audits(
    session: AsyncSession,
    actor: str,
    action: str,
    resources: Sequence[tuple[str, object, dict[str, Any]]],
) -> None:
    """One event per (resource type, resource id, details), inserted now in one statement:
    where many are written at once, an ORM object each at the flush cost more than the rows."""
    if not resources:
        return
    connection = await session.connection()
    await connection.execute(
        insert(AuditEvent),
        [
            {
                "actor": actor,
                "action": action,
                "resource_type": resource_type,
                "resource_id": str(resource_id),
                "details": details,
            }
            for resource_type, resource_id, details in resources
        ],
    )
