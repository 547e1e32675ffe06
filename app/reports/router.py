"""Report links (partner API, `read` scope) and the report page they open (`GET /r/{token}`,
no API key: the token is the credential)."""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request, status
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from pydantic import SecretStr

from app.api.deps import Context, CurrentPrincipal, Session
from app.countries import normalise_country
from app.errors import InvalidInputError
from app.evaluations.trends import Granularity
from app.pagination import Page, PageParams, page_params
from app.reports import content, service
from app.reports.schemas import ReportLinkCreate, ReportLinkCreated, ReportLinkRead

router = APIRouter(tags=["reports"])
PAGE_PATH = "/r/{token}"

_templates = Environment(
    loader=PackageLoader("app.reports", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


async def report_key(request: Request) -> SecretStr:  # async: no thread-pool hop (app.api.deps)
    key: SecretStr = request.app.state.report_key
    return key


ReportKey = Annotated[SecretStr, Depends(report_key)]


@router.post(
    "/orgs/{org_id}/report-links",
    status_code=status.HTTP_201_CREATED,
    responses={404: {"description": "Unknown org"}, 422: {"description": "Invalid range"}},
)
async def create_report_link(
    org_id: uuid.UUID,
    request: Request,
    session: Session,
    principal: CurrentPrincipal,
    context: Context,
    key: ReportKey,
    data: Annotated[ReportLinkCreate | None, Body()] = None,
) -> ReportLinkCreated:
    """A link to the org's report that opens without an API key until it expires (30 days
    by default, at most 90) or is revoked. The URL is shown once."""
    settings = context.settings
    return await service.create_link(
        session,
        principal,
        org_id,
        data or ReportLinkCreate(),
        now=context.clock.now(),
        key=key,
        default_days=settings.report_link_default_days,
        base_url=settings.public_base_url or str(request.base_url),
    )


@router.get("/orgs/{org_id}/report-links")
async def list_report_links(
    org_id: uuid.UUID,
    session: Session,
    principal: CurrentPrincipal,
    context: Context,
    page: Annotated[PageParams, Depends(page_params)],
) -> Page[ReportLinkRead]:
    """The org's report links, newest first, with their status; never their URLs."""
    return await service.list_links(session, principal, org_id, page, context.clock.now())


@router.get(
    "/orgs/{org_id}/report-links/{link_id}",
    responses={404: {"description": "Unknown org or link"}},
)
async def get_report_link(
    org_id: uuid.UUID,
    link_id: uuid.UUID,
    session: Session,
    principal: CurrentPrincipal,
    context: Context,
) -> ReportLinkRead:
    return await service.get_link(session, principal, org_id, link_id, context.clock.now())


@router.post(
    "/orgs/{org_id}/report-links/{link_id}/revoke",
    responses={404: {"description": "Unknown org or link"}},
)
@router.delete(
    "/orgs/{org_id}/report-links/{link_id}",
    responses={404: {"description": "Unknown org or link"}},
)
async def revoke_report_link(
    org_id: uuid.UUID,
    link_id: uuid.UUID,
    session: Session,
    principal: CurrentPrincipal,
    context: Context,
) -> ReportLinkRead:
    """The link stops opening at once (its page answers 404); it stays listed, revoked."""
    return await service.revoke_link(session, principal, org_id, link_id, context.clock.now())


@router.get(PAGE_PATH, response_class=HTMLResponse, include_in_schema=False)
async def report_page(
    token: str,
    session: Session,
    context: Context,
    key: ReportKey,
    engine: Annotated[str | None, Query(max_length=100)] = None,
    location: Annotated[str | None, Query(max_length=8)] = None,
    granularity: Annotated[str | None, Query(max_length=8)] = None,
) -> HTMLResponse:
    started = time.perf_counter()
    now = context.clock.now()
    opened = await service.open_link(session, token, key, now)
    if opened is None:
        return _page(
            404,
            "Report not found",
            "This report link is not valid: it may have expired or been revoked, or it was "
            "copied incompletely. Ask whoever shared it for a new one.",
        )
    try:
        selection, chosen = _choice(engine, location, granularity)
        report = await content.build_report(
            session, opened.org, opened.start, opened.end, selection, chosen
        )
    except InvalidInputError as exc:
        return _page(422, "Nothing to show for this choice", str(exc))
    nonce = secrets.token_urlsafe(16)
    html = _templates.get_template("report.html").render(
        r=report,
        nonce=nonce,
        engine_names=dict(report.engines),
        generated=now.strftime("%Y-%m-%d %H:%M"),
        expires=opened.link.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
    )
    response = HTMLResponse(html, headers=_headers(nonce))
    # How long the page took to build: visible in the browser's network panel.
    response.headers["Server-Timing"] = f"report;dur={(time.perf_counter() - started) * 1000:.1f}"
    return response


def _choice(
    engine: str | None, location: str | None, granularity: str | None
) -> tuple[content.Selection, Granularity | None]:
    """What the page's query asks to show; InvalidInputError saying what is wrong."""
    if engine and location:
        raise InvalidInputError("choose an engine or a country, not both")
    try:
        country = normalise_country(location) if location else None
        chosen = Granularity(granularity) if granularity else None
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from exc
    return content.Selection(engine=engine or None, location=country), chosen


def _headers(nonce: str) -> dict[str, str]:
    return {
        # No script at all, styles only from this page's own block, images only inline.
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'nonce-{nonce}'; img-src data:; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        ),
        # The token is in the URL: keep the page out of shared caches and search engines.
        "Cache-Control": "private, no-store",
        "X-Robots-Tag": "noindex, nofollow",
    }


def _page(status_code: int, title: str, message: str) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    html = _templates.get_template("page.html").render(title=title, message=message, nonce=nonce)
    return HTMLResponse(html, status_code=status_code, headers=_headers(nonce))
