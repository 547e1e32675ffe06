from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Response, status
from fastapi.responses import StreamingResponse

from app.api.deps import Context, CurrentPrincipal, Session, StatementSession
from app.evaluations import exports, rescore, results, service, trends
from app.evaluations.metrics import TREND_METRICS, Metric
from app.evaluations.schemas import (
    BatchListItem,
    BatchRead,
    BulkAccepted,
    BulkEvaluationTrigger,
    ChangesRead,
    EvaluationAccepted,
    EvaluationTrigger,
    RescoreCreate,
    RescoreRead,
    ResultsRead,
    TrendRead,
)
from app.evaluations.trends import Granularity
from app.orgs.service import get_org
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


@router.post(
    "/evaluations/bulk",
    status_code=status.HTTP_202_ACCEPTED,
    responses={422: {"description": "No org, more than 1,000, or an org twice"}},
)
async def trigger_bulk(
    request: BulkEvaluationTrigger, session: Session, principal: CurrentPrincipal, context: Context
) -> BulkAccepted:
    """Today's batch of each org, as `POST /orgs/{id}/evaluations` makes one, in one
    transaction; then the jobs are queued. One item per org, in the order asked: an org that
    cannot be evaluated is `skipped` with the error its own trigger would answer (an org the
    caller cannot see is `not_found`) and never stops the others."""
    return await service.trigger_bulk(
        session,
        context.queue,
        context.clock,
        principal,
        request,
        max_runs=context.settings.max_runs_per_batch,
    )


@router.get("/batches/{batch_id}")
async def get_batch(
    batch_id: uuid.UUID, session: StatementSession, principal: CurrentPrincipal
) -> BatchRead:
    return await service.read_batch(session, principal, batch_id)


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
    return await service.cancel(session, context.clock, principal, batch_id)


@router.get(
    "/batches/{batch_id}/results",
    responses={422: {"description": "Invalid page, filter or cursor (`invalid_cursor`)"}},
)
async def get_results(
    batch_id: uuid.UUID,
    session: Session,
    principal: CurrentPrincipal,
    page: Annotated[PageParams, Depends(page_params)],
    engine: Annotated[ShortLabel | None, Query(description="Only runs of this engine")] = None,
    location: Annotated[Country | None, Query(description="Only runs in this country")] = None,
    cursor: Annotated[
        str | None,
        Query(max_length=40, description="`next_cursor` of the previous page: the runs after it"),
    ] = None,
) -> ResultsRead:
    batch = await service.get_batch(session, principal, batch_id)
    return await results.batch_results(session, batch, page, engine, location, cursor)


@router.get("/orgs/{org_id}/batches")
async def list_batches(
    org_id: uuid.UUID,
    session: Session,
    principal: CurrentPrincipal,
    page: Annotated[PageParams, Depends(page_params)],
) -> Page[BatchListItem]:
    """The org's batches, newest first."""
    return await service.list_batches(session, principal, org_id, page)


@router.get("/batches/{batch_id}/results.csv", response_class=StreamingResponse)
async def export_results(
    batch_id: uuid.UUID, session: Session, principal: CurrentPrincipal, context: Context
) -> StreamingResponse:
    """One row per run, in the order of the JSON results; lists joined by `; `."""
    batch = await service.get_batch(session, principal, batch_id)
    return _csv(exports.run_rows(context.sessions, batch.id), f"batch-{batch.id}-results.csv")


TrendMetric = Annotated[Metric, Query(description="What to follow")]
From = Annotated[date | None, Query(alias="from", description="First day (default: a period)")]
To = Annotated[date | None, Query(alias="to", description="Last day (default: today, UTC)")]
EngineFilter = Annotated[ShortLabel | None, Query(description="Only this engine")]
LocationFilter = Annotated[Country | None, Query(description="Only this country")]


@router.get("/orgs/{org_id}/trends")
async def get_trend(
    org_id: uuid.UUID,
    session: Session,
    principal: CurrentPrincipal,
    context: Context,
    metric: TrendMetric,
    date_from: From = None,
    date_to: To = None,
    granularity: Granularity = Granularity.DAY,
    engine: EngineFilter = None,
    location: LocationFilter = None,
) -> TrendRead:
    """One point per day or ISO week in range, from the org's completed batches: value, 95%
    interval, cells and answers (value null where nothing was measured)."""
    org = await get_org(session, principal, org_id)
    start, end = trends.trend_range(context.clock.today(), date_from, date_to, granularity)
    return await trends.trend(session, org.id, metric, start, end, granularity, engine, location)


@router.get("/orgs/{org_id}/trends.csv", response_class=StreamingResponse)
async def export_trends(
    org_id: uuid.UUID,
    session: Session,
    principal: CurrentPrincipal,
    context: Context,
    metric: Annotated[
        Metric | None, Query(description="What to follow (default: every metric)")
    ] = None,
    date_from: From = None,
    date_to: To = None,
    granularity: Granularity = Granularity.DAY,
    engine: EngineFilter = None,
    location: LocationFilter = None,
) -> StreamingResponse:
    """The trend points as CSV: one row per metric and period."""
    org = await get_org(session, principal, org_id)
    start, end = trends.trend_range(context.clock.today(), date_from, date_to, granularity)
    metrics = [metric] if metric is not None else list(TREND_METRICS)
    points = await trends.trend_points(
        session, org.id, metrics, start, end, granularity, engine, location
    )
    return _csv(exports.trend_rows(points, engine, location), f"org-{org.id}-trends.csv")


@router.get("/orgs/{org_id}/changes")
async def get_changes(
    org_id: uuid.UUID,
    session: Session,
    principal: CurrentPrincipal,
    context: Context,
    window: Annotated[int, Query(ge=1, le=trends.MAX_WINDOW_DAYS, description="Days")] = 7,
    date_to: To = None,
) -> ChangesRead:
    """The last `window` days against the `window` days before: per metric overall, per
    engine and per country, the difference, its 95% interval and a verdict."""
    org = await get_org(session, principal, org_id)
    return await trends.changes(session, org.id, window, date_to or context.clock.today())


@router.post(
    "/orgs/{org_id}/rescore",
    status_code=status.HTTP_202_ACCEPTED,
    responses={404: {"description": "Unknown org"}, 503: {"description": "No job queue"}},
)
async def request_rescore(
    org_id: uuid.UUID,
    data: RescoreCreate,
    session: Session,
    principal: CurrentPrincipal,
    context: Context,
    response: Response,
) -> RescoreRead:
    """Find the facts of the stored answers of the org's batches from `from` to `to` again,
    with its current names, aliases, domains and competitors: no engine call, no charge."""
    request = await rescore.request_rescore(
        session, context.queue, context.clock, principal, org_id, data
    )
    response.headers["Location"] = f"/orgs/{org_id}/rescores/{request.id}"
    return RescoreRead.model_validate(request)


@router.get("/orgs/{org_id}/rescores/{rescore_id}")
async def get_rescore(
    org_id: uuid.UUID, rescore_id: uuid.UUID, session: Session, principal: CurrentPrincipal
) -> RescoreRead:
    return RescoreRead.model_validate(
        await rescore.get_rescore(session, principal, org_id, rescore_id)
    )


def _csv(rows: AsyncIterator[str], filename: str) -> StreamingResponse:
    return StreamingResponse(
        rows,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
