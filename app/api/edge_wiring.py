"""How the edge is put on the app: middleware, /docs from the package, /metrics, the OpenAPI
error responses, and what runs while the app lives (rate-limit counters, business gauges)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry, generate_latest
from starlette.middleware.cors import CORSMiddleware

from app.api.deps import get_principal
from app.api.edge import EdgeMiddleware, GuardMiddleware
from app.api.openapi import declare_error_responses
from app.api.throttle import create_counter
from app.auth import Principal
from app.business_metrics import BusinessGauges
from app.context import AppContext
from app.metrics import CONTENT_TYPE, exposition
from app.settings import Settings

DOCS_ASSETS = "/docs/assets"
EXPOSED_HEADERS = [
    "X-Request-ID",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Retry-After",
    "Location",
]


# What the request line (method, path, query) may add to the headers h11 buffers.
REQUEST_LINE_BYTES = 8192


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn options for the API. h11 buffers at most MAX_HEADER_BYTES (and a request line)
    before the app sees a request, and answers 400 beyond: a limit of ours, where httptools'
    are fixed. The edge's own check answers 431 with the JSON error body below that."""
    return {
        "http": "h11",
        "h11_max_incomplete_event_size": settings.max_header_bytes + REQUEST_LINE_BYTES,
    }


def install_edge(app: FastAPI, settings: Settings) -> None:
    # A redirect to the path with or without its slash would be built from the Host header.
    app.router.redirect_slashes = False
    app.add_middleware(GuardMiddleware, settings=settings, counter_of=lambda: app.state.counter)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_headers=settings.cors_headers,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        )
    app.add_middleware(EdgeMiddleware, settings=settings)
    _add_docs(app)
    _add_metrics(app, settings)
    declare_error_responses(app)


@contextlib.asynccontextmanager
async def edge_running(app: FastAPI, context: AppContext) -> AsyncIterator[None]:
    """The rate-limit counters and the business gauges' loop, for as long as the app serves."""
    settings = context.settings
    app.state.counter = create_counter(context.redis, settings.redis_key_prefix, context.clock)
    gauges = BusinessGauges(context)
    app.state.gauges = gauges
    registry = CollectorRegistry()
    registry.register(gauges)
    app.state.gauges_registry = registry
    # The first snapshot before the app serves, so that the first scrape has gauges.
    await gauges.iterate_once()
    stop = asyncio.Event()
    loop = asyncio.create_task(gauges.run(stop))
    try:
        yield
    finally:
        stop.set()
        await loop


def _add_docs(app: FastAPI) -> None:
    # Swagger UI's files ship in a package (fastapi-offline): the page loads nothing from a CDN.
    assets = files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - docs",
            oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()


def _add_metrics(app: FastAPI, settings: Settings) -> None:
    async def optional_principal(request: Request) -> Principal | None:
        principal: Principal | None = getattr(request.state, "principal", None)
        return principal

    # Declared by hand: with METRICS_REQUIRE_TOKEN=false it needs no token at all.
    dependency: Any = get_principal if settings.metrics_require_token else optional_principal

    @app.get(
        "/metrics",
        tags=["health"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
    )
    async def metrics(
        request: Request, principal: Principal | None = Depends(dependency)
    ) -> Response:
        """Prometheus metrics of this process, and the business gauges (cached, shared)."""
        if principal is not None and settings.metrics_require_token:
            principal.require_admin()
        gauges: BusinessGauges = request.app.state.gauges
        await gauges.load()
        body = exposition() + generate_latest(request.app.state.gauges_registry)
        return Response(body, media_type=CONTENT_TYPE)
