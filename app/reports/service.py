"""Report links: minted, listed and revoked by the org's partner; resolved for anyone holding
one. A link that is tampered with, expired, revoked, or whose org is gone resolves to nothing
(the page answers 404 alike, so a probe learns nothing)."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import record_audit
from app.auth import Principal
from app.db.models import Org, ReportLink
from app.errors import InvalidInputError, NotFoundError
from app.orgs.service import get_org
from app.pagination import Page, PageParams, paginate
from app.reports import tokens
from app.reports.schemas import (
    MAX_RANGE_DAYS,
    ReportLinkCreate,
    ReportLinkCreated,
    ReportLinkRead,
)
from app.settings import Settings

DEFAULT_RANGE_DAYS = 30
# How often opening a link writes when it was last opened.
_OPENED_RESOLUTION = timedelta(minutes=1)


def signing_key(settings: Settings) -> SecretStr:
    """REPORT_SIGNING_KEY, or a key of this process's own (links then end when it does)."""
    return settings.report_signing_key or SecretStr(secrets.token_urlsafe(32))


def _status(link: ReportLink, now: datetime) -> Literal["active", "expired", "revoked"]:
    if link.revoked_at is not None:
        return "revoked"
    return "expired" if link.expires_at <= now else "active"


def link_read(link: ReportLink, now: datetime) -> ReportLinkRead:
    return ReportLinkRead(
        id=link.id,
        org_id=link.org_id,
        label=link.label,
        date_from=link.date_from,
        date_to=link.date_to,
        days=link.days,
        status=_status(link, now),
        created_by=link.created_by,
        created_at=link.created_at,
        expires_at=link.expires_at,
        revoked_at=link.revoked_at,
        last_opened_at=link.last_opened_at,
    )


async def create_link(
    session: AsyncSession,
    principal: Principal,
    org_id: uuid.UUID,
    data: ReportLinkCreate,
    *,
    now: datetime,
    key: SecretStr,
    default_days: int,
    base_url: str,
) -> ReportLinkCreated:
    org = await get_org(session, principal, org_id)
    today = now.date()
    date_to = data.date_to or (today if data.date_from else None)
    if data.date_from is not None and date_to is not None:
        if date_to > today:
            raise InvalidInputError(
                f"to ({date_to}) is after today ({today})", code="invalid_range"
            )
        if (date_to - data.date_from).days + 1 > MAX_RANGE_DAYS:
            raise InvalidInputError(
                f"a report spans at most {MAX_RANGE_DAYS} days; {data.date_from}..{date_to} is "
                f"{(date_to - data.date_from).days + 1}",
                code="invalid_range",
            )
    link = ReportLink(
        id=uuid.uuid4(),
        org_id=org.id,
        partner_id=org.partner_id,
        date_from=data.date_from,
        date_to=date_to,
        days=None if data.date_from else (data.days or DEFAULT_RANGE_DAYS),
        label=data.label,
        created_by=principal.actor,
        created_at=now,
        # Whole seconds: the token carries the expiry in seconds.
        expires_at=(now + timedelta(days=data.expires_in_days or default_days)).replace(
            microsecond=0
        ),
    )
    session.add(link)
    record_audit(
        session,
        actor=principal.actor,
        action="report_link.created",
        resource_type="org",
        resource_id=org.id,
        details={"link_id": str(link.id), "expires_at": link.expires_at.isoformat()},
    )
    await session.commit()
    token = tokens.sign(
        tokens.LinkClaims(
            link_id=link.id,
            org_id=link.org_id,
            date_from=link.date_from,
            date_to=link.date_to,
            days=link.days,
            expires_at=link.expires_at,
        ),
        key,
    )
    return ReportLinkCreated(
        **link_read(link, now).model_dump(), url=f"{base_url.rstrip('/')}/r/{token}"
    )


async def list_links(
    session: AsyncSession,
    principal: Principal,
    org_id: uuid.UUID,
    page: PageParams,
    now: datetime,
) -> Page[ReportLinkRead]:
    """The org's links, newest first; never their tokens."""
    org = await get_org(session, principal, org_id)
    query = select(ReportLink).where(ReportLink.org_id == org.id)
    order = (ReportLink.created_at.desc(), ReportLink.id)
    return await paginate(session, query, order, page, lambda link: link_read(link, now))


async def _link(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID, link_id: uuid.UUID
) -> tuple[Org, ReportLink]:
    org = await get_org(session, principal, org_id)
    link = await session.scalar(
        select(ReportLink).where(ReportLink.id == link_id, ReportLink.org_id == org.id)
    )
    if link is None:
        raise NotFoundError(f"report link {link_id} not found")
    return org, link


async def get_link(
    session: AsyncSession,
    principal: Principal,
    org_id: uuid.UUID,
    link_id: uuid.UUID,
    now: datetime,
) -> ReportLinkRead:
    return link_read((await _link(session, principal, org_id, link_id))[1], now)


async def revoke_link(
    session: AsyncSession,
    principal: Principal,
    org_id: uuid.UUID,
    link_id: uuid.UUID,
    now: datetime,
) -> ReportLinkRead:
    """The link stops working at once; revoking a revoked link changes nothing."""
    org, link = await _link(session, principal, org_id, link_id)
    if link.revoked_at is None:
        link.revoked_at = now
        record_audit(
            session,
            actor=principal.actor,
            action="report_link.revoked",
            resource_type="org",
            resource_id=org.id,
            details={"link_id": str(link.id)},
        )
        await session.commit()
    return link_read(link, now)


@dataclass(frozen=True, slots=True)
class OpenedLink:
    link: ReportLink
    org: Org
    start: date
    end: date


async def open_link(
    session: AsyncSession, token: str, key: SecretStr, now: datetime
) -> OpenedLink | None:
    """The link and the range it shows today, or None for any token that must not open."""
    try:
        claims = tokens.verify(token, key, now)
    except tokens.InvalidTokenError:
        return None
    link = await session.get(ReportLink, claims.link_id)
    if (
        link is None
        or link.org_id != claims.org_id
        or link.revoked_at is not None
        or link.expires_at <= now
    ):
        return None
    org = await session.get(Org, link.org_id)
    if org is None:
        return None
    if link.last_opened_at is None or now - link.last_opened_at >= _OPENED_RESOLUTION:
        await session.execute(
            update(ReportLink).where(ReportLink.id == link.id).values(last_opened_at=now)
        )
        await session.commit()
    if link.date_from is not None:
        return OpenedLink(link, org, link.date_from, link.date_to or now.date())
    end = now.date()
    return OpenedLink(link, org, end - timedelta(days=(link.days or DEFAULT_RANGE_DAYS) - 1), end)
