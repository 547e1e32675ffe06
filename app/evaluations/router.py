from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Response, status

from app.api.deps import Context, CurrentPrincipal, Session
from app.evaluations import results, service
from app.evaluations.schemas import (
    BatchListItem,
    BatchRead,
    EvaluationAccepted,
    EvaluationTrigger,
    ResultsRead,
)
from app.pagination import Page, PageParams, page_params
from app.schemas import Country, ShortLabel

router = APIRouter(tags=["evaluations"])


@router.post(
    "/orgs/{org_id}/evaluations",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        402: {"description": "The partner's balance cannot cover the remaining runs"},
        404: {"description": "Unknown org"},
        409: {
            "description": "Inactive org, nothing to evaluate, or more runs than "
            "MAX_RUNS_PER_BATCH (`batch_too_large`)"
        },
    },
)
async def trigger_evaluation(
    org_id: uuid.UUID,
    session: Session,
    principal: CurrentPrincipal,
    context: Context,
    response: Response,
    trigger: Annotated[EvaluationTrigger | None, Body()] = None,
) -> EvaluationAccepted:
    """Create today's batch for the org (or reuse it; a failed one is resumed) and queue it."""
    accepted = await service.trigger_evaluation(
        session,
        context.queue,
        context.clock,
        principal,
        org_id,
        trigger or EvaluationTrigger(),
        max_runs=context.settings.max_runs_per_batch,
    )
    response.headers["Location"] = f"/batches/{accepted.batch_id}"
    return accepted


@router.get("/batches/{batch_id}")
async def get_batch(
    batch_id: uuid.UUID, session: Session, principal: CurrentPrincipal
) -> BatchRead:
    batch = await service.get_batch(session, principal, batch_id)
    return await service.batch_read(session, batch)


@router.post(
    "/batches/{batch_id}/cancel",
    responses={
        403: {"description": "Only the operator cancels batches"},
        404: {"description": "Unknown batch"},
        409: {"description": "The batch has already ended"},
    },
)
async def cancel_batch(
    batch_id: uuid.UUID, session: Session, principal: CurrentPrincipal, context: Context
) -> BatchRead:
    """Stop a batch: no new run is asked; runs in flight finish; what completed is charged and
    the rest of the reservation is released. `status` is `cancelled` once nothing is in flight
    (at once when nothing is), `cancel_requested_at` set until then."""
    batch = await service.cancel(session, context.clock, principal, batch_id)
    return await service.batch_read(session, batch)


@router.get("/batches/{batch_id}/results")
async def get_results(
    batch_id: uuid.UUID,
    session: Session,
    principal: CurrentPrincipal,
    page: Annotated[PageParams, Depends(page_params)],
    engine: Annotated[ShortLabel | None, Query(description="Only runs of this engine")] = None,
    location: Annotated[Country | None, Query(description="Only runs in this country")] = None,
) -> ResultsRead:
    batch = await service.get_batch(session, principal, batch_id)
    return await results.batch_results(session, batch, page, engine, location)


@router.get("/orgs/{org_id}/batches")
async def list_batches(
    org_id: uuid.UUID,
    session: Session,
    principal: CurrentPrincipal,
    page: Annotated[PageParams, Depends(page_params)],
) -> Page[BatchListItem]:
    """The org's batches, newest first."""
    return await service.list_batches(session, principal, org_id, page)
