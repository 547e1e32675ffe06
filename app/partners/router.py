from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, status

from app.api.deps import Context, CurrentPrincipal, Session
from app.pagination import Page, PageParams, page_params
from app.partners import service
from app.partners.schemas import PartnerCreate, PartnerRead, TopUp

router = APIRouter(prefix="/partners", tags=["partners"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "A partner of that name exists (`partner_exists`)"}},
)
async def create_partner(
    data: PartnerCreate, session: Session, principal: CurrentPrincipal, context: Context
) -> PartnerRead:
    partner = await service.create_partner(
        session, principal, data, context.settings.default_price_per_run
    )
    return PartnerRead.model_validate(partner)


@router.get("")
async def list_partners(
    session: Session,
    principal: CurrentPrincipal,
    page: Annotated[PageParams, Depends(page_params)],
) -> Page[PartnerRead]:
    return await service.list_partners(session, principal, page)


@router.get("/{partner_id}")
async def get_partner(
    partner_id: uuid.UUID, session: Session, principal: CurrentPrincipal
) -> PartnerRead:
    return PartnerRead.model_validate(await service.get_partner(session, principal, partner_id))


@router.post("/{partner_id}/topups")
async def top_up(
    partner_id: uuid.UUID, data: TopUp, session: Session, principal: CurrentPrincipal
) -> PartnerRead:
    return PartnerRead.model_validate(await service.top_up(session, principal, partner_id, data))
