"""Partners: who pays for evaluations (their API keys: app.apikeys)."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import record_audit
from app.auth import Principal
from app.db.models import Partner
from app.db.types import MAX_MONEY
from app.errors import ConflictError, InvalidInputError, NotFoundError
from app.pagination import Page, PageParams, paginate
from app.partners.schemas import PartnerCreate, PartnerRead, TopUp


async def create_partner(
    session: AsyncSession, principal: Principal, data: PartnerCreate, default_price: Decimal
) -> Partner:
    principal.require_admin()
    price = data.price_per_run if data.price_per_run is not None else default_price
    partner = Partner(
        name=data.name, balance=data.balance, reserved=Decimal(0), price_per_run=price
    )
    session.add(partner)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise ConflictError(
            f"a partner named '{partner.name}' already exists", code="partner_exists"
        ) from exc
    record_audit(
        session,
        actor=principal.actor,
        action="partner.created",
        resource_type="partner",
        resource_id=partner.id,
        details={"balance": str(partner.balance), "price_per_run": str(price)},
    )
    await session.commit()
    return partner


async def get_partner(
    session: AsyncSession, principal: Principal, partner_id: uuid.UUID, *, for_update: bool = False
) -> Partner:
    query = select(Partner).where(Partner.id == partner_id)
    if for_update:
        query = query.with_for_update()
    partner = await session.scalar(query)
    if partner is None or not principal.can_access(partner.id):
        raise NotFoundError(f"partner {partner_id} not found")
    return partner


async def list_partners(
    session: AsyncSession, principal: Principal, page: PageParams
) -> Page[PartnerRead]:
    query = select(Partner)
    if principal.partner_id is not None:
        query = query.where(Partner.id == principal.partner_id)
    return await paginate(
        session, query, (Partner.created_at, Partner.id), page, PartnerRead.model_validate
    )


async def top_up(
    session: AsyncSession, principal: Principal, partner_id: uuid.UUID, data: TopUp
) -> Partner:
    principal.require_admin()
    partner = await get_partner(session, principal, partner_id, for_update=True)
    if partner.balance + data.amount > MAX_MONEY:
        raise InvalidInputError(f"the balance would exceed {MAX_MONEY}", code="balance_overflow")
    partner.balance = partner.balance + data.amount
    record_audit(
        session,
        actor=principal.actor,
        action="partner.topped_up",
        resource_type="partner",
        resource_id=partner.id,
        details={"amount": str(data.amount), "balance": str(partner.balance), "note": data.note},
    )
    await session.commit()
    return partner
