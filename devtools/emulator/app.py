"""The engine emulator: one ASGI app speaking every provider's wire format (see the README).

Test hooks live under /_emulator: the request log, and the config, replaceable at run time.
"""

from __future__ import annotations

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from devtools.emulator import (
    anthropic,
    brightdata,
    dataforseo,
    gemini,
    linkup,
    openai_chat,
    perplexity,
)
from devtools.emulator.config import EmulatorConfig
from devtools.emulator.routing import provider_endpoint
from devtools.emulator.state import EmulatorState

PROVIDER_ROUTES = (
    *openai_chat.ROUTES,
    *anthropic.ROUTES,
    *brightdata.ROUTES,
    *linkup.ROUTES,
    *gemini.ROUTES,
    *perplexity.ROUTES,
    *dataforseo.ROUTES,
)


def create_emulator_app(config: EmulatorConfig | None = None) -> Starlette:
    state = EmulatorState(config or EmulatorConfig())

    async def get_config(_request: Request) -> Response:
        return JSONResponse(state.config.model_dump(mode="json"))

    async def put_config(request: Request) -> Response:
        try:
            config = EmulatorConfig.model_validate_json(await request.body())
        except ValidationError as exc:
            return JSONResponse({"error": exc.errors(include_url=False)}, status_code=422)
        state.configure(config)
        return JSONResponse(config.model_dump(mode="json"))

    async def get_requests(request: Request) -> Response:
        provider = request.query_params.get("provider")
        return JSONResponse([entry.as_json() for entry in state.logged(provider)])

    async def delete_requests(_request: Request) -> Response:
        state.clear_log()
        return Response(status_code=204)

    routes = [
        Route("/_emulator/config", get_config, methods=["GET"]),
        Route("/_emulator/config", put_config, methods=["PUT"]),
        Route("/_emulator/requests", get_requests, methods=["GET"]),
        Route("/_emulator/requests", delete_requests, methods=["DELETE"]),
        *(provider_endpoint(state, route) for route in PROVIDER_ROUTES),
    ]
    app = Starlette(routes=routes)
    app.state.emulator = state
    return app
