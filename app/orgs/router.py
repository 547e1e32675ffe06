from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from app.api.deps import Context, CurrentPrincipal, Session
from app.limits import check_matrix_axis
from app.orgs import service
from app.orgs.schemas import (
    EnginesSet,
    LocationsSet,
    OrgCreate,
    OrgDetail,
    OrgRead,
    OrgUpdate,
    QuestionsSet,
)
from app.pagination import Page, PageParams, page_params

router = APIRouter(prefix="/orgs", tags=["orgs"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_org(data: OrgCreate, session: Session, principal: CurrentPrincipal) -> OrgRead:
    return OrgRead.model_validate(await service.create_org(session, principal, data))


@router.get("")
async def list_orgs(
    session: Session,
    principal: CurrentPrincipal,
    page: Annotated[PageParams, Depends(page_params)],
    partner_id: Annotated[uuid.UUID | None, Query()] = None,
    active: Annotated[bool | None, Query()] = None,
) -> Page[OrgRead]:
    return await service.list_orgs(session, principal, page, partner_id, active)


@router.get("/{org_id}")
async def get_org(org_id: uuid.UUID, session: Session, principal: CurrentPrincipal) -> OrgDetail:
    org = await service.get_org(session, principal, org_id)
    return await service.org_detail(session, org)


@router.patch("/{org_id}")
async def update_org(
    org_id: uuid.UUID,
    data: OrgUpdate,
    session: Session,
    principal: CurrentPrincipal,
    context: Context,
) -> OrgDetail:
    """Change the org. Deactivating it (`"active": false`) cancels its running batch: runs in
    flight finish, nothing new is asked, only what completed is charged."""
    org = await service.update_org(session, context.clock, principal, org_id, data)
    return await service.org_detail(session, org)


@router.put("/{org_id}/questions")
async def set_questions(
    org_id: uuid.UUID,
    data: QuestionsSet,
    session: Session,
    principal: CurrentPrincipal,
    context: Context,
) -> OrgDetail:
    check_matrix_axis(context.settings, "questions", len(data.questions))
    org = await service.set_questions(session, principal, org_id, data)
    return await service.org_detail(session, org)


@router.put("/{org_id}/engines")
async def set_engines(
    org_id: uuid.UUID,
    data: EnginesSet,
    session: Session,
    principal: CurrentPrincipal,
    context: Context,
) -> OrgDetail:
    check_matrix_axis(context.settings, "engines", len(set(data.engines)))
    org = await service.set_engines(session, principal, org_id, data, context.engines)
    return await service.org_detail(session, org)


@router.put("/{org_id}/locations")
async def set_locations(
    org_id: uuid.UUID,
    data: LocationsSet,
    session: Session,
    principal: CurrentPrincipal,
    context: Context,
) -> OrgDetail:
    """Set the countries questions are asked from; a country one of the org's engines does
    not serve is refused (422 `unserved_country`, naming both)."""
    check_matrix_axis(context.settings, "countries", len(data.locations))
    org = await service.set_locations(session, principal, org_id, data, context.engines)
    return await service.org_detail(session, org)
