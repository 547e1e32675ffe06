"""The partner-facing edge, tried as an attacker and a careless client would: bad input, body
and header limits, rate limits shared through Redis, CORS, hosts, security headers, batch
size limits and the access log. Over real HTTP, Postgres, Redis and the SQS emulator."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest

from app.api.edge_wiring import REQUEST_LINE_BYTES
from app.context import AppContext
from app.logging import configure_logging
from app.settings import Settings
from devtools.embedded import serve_api
from tests.conftest import API_TOKEN
from tests.factories import create_org, create_partner, expect
from tests.test_api_errors import AUTH, anon, error_body, validation_locs

__all__ = ["anon"]  # the fixture


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[str]:
    """One more API server with a context of its own (as a second API process has)."""
    async with AppContext.create(settings) as context, serve_api(settings, context) as base_url:
        yield base_url


@asynccontextmanager
async def client_of(settings: Settings, **headers: str) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        served(settings) as base_url,
        httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client,
    ):
        yield client


async def raw_request(base_url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (what httpx would refuse to send) and read the answer."""
    host, port = httpx.URL(base_url).host, httpx.URL(base_url).port
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


# Bad input never answers 500


async def test_control_and_invisible_characters_are_422_naming_the_field(
    api: httpx.AsyncClient,
) -> None:
    partner_id = await create_partner(api)
    for bad in ("Acme\x00Corp", "\x07bell", "\u200b\u200b", "\u3164", " \u2060 "):
        response = await api.post("/partners", json={"name": bad})
        detail = error_body(response, 422, "validation_error")
        assert validation_locs(detail) == [["body", "name"]], (bad, detail)
    # A lone surrogate, which no encoder sends but a JSON escape can carry.
    response = await api.post(
        "/partners", content=b'{"name": "a\\ud800b"}', headers={"Content-Type": "application/json"}
    )
    assert validation_locs(error_body(response, 422, "validation_error")) == [["body", "name"]]
    setup = await create_org(api, partner_id, questions=0, engines=(), locations=())
    cases: list[tuple[str, str, dict[str, object], list[object]]] = [
        ("post", "/orgs", {"partner_id": partner_id, "name": "X", "aliases": ["a\x00"]},
         ["body", "aliases", 0]),
        ("post", "/orgs", {"partner_id": partner_id, "name": "X", "competitors": ["\u200b"]},
         ["body", "competitors", 0]),
        ("put", f"/orgs/{setup.org_id}/questions", {"questions": ["What\x00 is it?"]},
         ["body", "questions", 0]),
        ("post", f"/orgs/{setup.org_id}/evaluations", {"triggered_by": "cron\x00"},
         ["body", "triggered_by"]),
        ("post", f"/orgs/{setup.org_id}/evaluations", {"user_id": "\u2800\u2800"},
         ["body", "user_id"]),
        ("post", f"/partners/{partner_id}/topups", {"amount": "1", "note": "n\x1bote"},
         ["body", "note"]),
    ]  # fmt: skip
    for method, path, body, loc in cases:
        response = await api.request(method, path, json=body)
        assert validation_locs(error_body(response, 422, "validation_error")) == [loc], path
    batch = str(uuid.uuid4())
    for query, name in (("engine=open%00ai", "engine"), ("location=U%00S", "location")):
        response = await api.get(f"/batches/{batch}/results?{query}")
        assert validation_locs(error_body(response, 422, "validation_error")) == [["query", name]]
    response = await api.get("/audit-events?actor=a%00b")
    assert validation_locs(error_body(response, 422, "validation_error")) == [["query", "actor"]]


async def test_pagination_has_upper_bounds(api: httpx.AsyncClient) -> None:
    too_far = (
        ("offset=100001", "offset"),
        ("limit=501", "limit"),
        ("offset=" + "9" * 30, "offset"),
    )
    for query, loc in too_far:
        response = await api.get(f"/partners?{query}")
        assert validation_locs(error_body(response, 422, "validation_error")) == [["query", loc]]
    assert expect(await api.get("/partners?offset=100000&limit=500"), 200)["items"] == []


async def test_money_must_be_a_plain_decimal(api: httpx.AsyncClient) -> None:
    partner_id = await create_partner(api, balance="1.00")
    for amount in ("-0", "-0.0", "1_000", " 12", "12 ", "1e3", "+5", "0x10", True, "NaN"):
        response = await api.post(f"/partners/{partner_id}/topups", json={"amount": amount})
        detail = error_body(response, 422, "validation_error")
        assert validation_locs(detail) == [["body", "amount"]], amount
    for balance in ("-0", "1 000"):
        response = await api.post("/partners", json={"name": "P", "balance": balance})
        assert validation_locs(error_body(response, 422, "validation_error")) == [
            ["body", "balance"]
        ]
    response = await api.post(f"/partners/{partner_id}/topups", content=b'{"amount": -0.0}',
                              headers={"Content-Type": "application/json"})  # fmt: skip
    error_body(response, 422, "validation_error")
    assert expect(await api.get(f"/partners/{partner_id}"), 200)["balance"] == "1.000000"
    response = await api.post(f"/partners/{partner_id}/topups", json={"amount": 2.5})
    assert expect(response, 200)["balance"] == "3.500000"


async def test_an_unknown_field_is_422_naming_it(api: httpx.AsyncClient) -> None:
    partner_id = await create_partner(api)
    setup = await create_org(api, partner_id)
    cases: list[tuple[str, dict[str, object], str]] = [
        (f"/orgs/{setup.org_id}/evaluations", {"sampels": 3}, "sampels"),
        ("/partners", {"name": "P", "balanse": "1"}, "balanse"),
        (f"/partners/{partner_id}/api-keys", {"name": "k", "scope": ["read"]}, "scope"),
    ]
    for path, body, field in cases:
        detail = error_body(await api.post(path, json=body), 422, "validation_error")
        assert validation_locs(detail) == [["body", field]], detail
        assert detail[0]["type"] == "extra_forbidden"
    response = await api.patch(f"/orgs/{setup.org_id}", json={"nmae": "typo"})
    assert validation_locs(error_body(response, 422, "validation_error")) == [["body", "nmae"]]
    # Nothing was created by the refused trigger.
    assert expect(await api.get(f"/orgs/{setup.org_id}/batches"), 200)["total"] == 0


async def test_anonymous_requests_get_401_before_the_body_is_read(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    bodies = [b"\xff\xfe\xfa not utf-8", deep, b'{"name": "\x00"}']
    for body in bodies:
        response = await api.post(
            "/partners",
            content=body,
            headers={"Authorization": "", "Content-Type": "application/json"},
        )
        assert error_body(response, 401, "unauthorized") == "send 'Authorization: Bearer <token>'"
        assert response.headers["www-authenticate"] == "Bearer"
    # Even a body over the limit is a 401 first: nothing tells an anonymous caller more.
    response = await api.post(
        "/partners",
        content=b"x" * (settings.max_body_bytes + 1),
        headers={"Authorization": "Bearer wrong"},
    )
    assert error_body(response, 401, "unauthorized") == "invalid API token"
    # With credentials, the deep document is a 400, never a 500 (a recursion error).
    response = await api.post(
        "/partners", content=deep, headers={"Content-Type": "application/json"}
    )
    assert error_body(response, 400, "http_error") == "There was an error parsing the body"


async def test_a_forged_host_is_never_reflected(settings: Settings) -> None:
    trusted = settings.model_copy(update={"trusted_hosts": "api.example.com,127.0.0.1"})
    async with client_of(trusted, **AUTH) as client:
        response = await client.get("/partners", headers={"Host": "evil.example"})
        assert error_body(response, 400, "invalid_host") == "this service does not answer that Host"
        assert "evil" not in response.text
        assert expect(await client.get("/partners"), 200)["total"] == 0
        response = await client.get("/healthz", headers={"Host": "api.example.com:8080"})
        assert response.status_code == 200
    # Whatever the hosts, no redirect is built from the Host header (no trailing-slash redirect).
    async with client_of(settings, **AUTH) as client:
        response = await client.get("/partners/", headers={"Host": "evil.example"})
        assert response.status_code == 404
        assert "location" not in response.headers


async def test_errors_below_the_app_answer_with_limits_of_ours(settings: Settings) -> None:
    async with served(settings) as base_url:
        auth = f"Authorization: Bearer {API_TOKEN}\r\n".encode()
        status, _, body = await raw_request(
            base_url,
            b"POST /partners HTTP/1.1\r\nHost: x\r\n" + auth
            + b"Content-Length: 99999999999\r\n\r\n",
        )  # fmt: skip
        assert status == 413, body
        assert json.loads(body)["error"] == "body_too_large"
        # Past what any server could mean, the server refuses it before the app (never a 500).
        status, _, body = await raw_request(
            base_url,
            b"POST /partners HTTP/1.1\r\nHost: x\r\n" + auth
            + b"Content-Length: 99999999999999999999999\r\n\r\n",
        )  # fmt: skip
        assert status == 400, body
        status, _, body = await raw_request(
            base_url, b"GET /partners HTTP/1.1\r\nHost: x\r\nX-Bad: \x00\x01\r\n" + auth + b"\r\n"
        )
        assert status == 400, body
        # A header block that never ends is cut off at our limit, before the app sees it
        # (all of it is read by the server: nothing unread resets the connection).
        endless = b"X-Filler: " + b"a" * (settings.max_header_bytes + REQUEST_LINE_BYTES + 1000)
        status, _, _ = await raw_request(
            base_url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + endless
        )
        assert status == 400


async def test_body_and_header_limits_answer_413_and_431(settings: Settings) -> None:
    small = settings.model_copy(update={"max_body_bytes": 2048, "max_header_bytes": 4096})
    async with client_of(small, **AUTH) as client:
        response = await client.post("/partners", json={"name": "n" * 3000})
        detail = error_body(response, 413, "body_too_large")
        assert detail == "the request body is over the limit of 2048 bytes"

        async def chunked() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b" " * 1000

        response = await client.post(
            "/partners", content=chunked(), headers={"Content-Type": "application/json"}
        )
        error_body(response, 413, "body_too_large")
        response = await client.get("/partners", headers={"X-Filler": "a" * 5000})
        detail = error_body(response, 431, "headers_too_large")
        assert "at most 4096" in detail
        assert expect(await client.get("/partners"), 200)["total"] == 0


async def test_security_headers_on_every_response(settings: Settings) -> None:
    hsts = settings.model_copy(update={"hsts_max_age_seconds": 31536000})
    async with client_of(hsts, **AUTH) as client:
        for path, status in (("/partners", 200), ("/nowhere", 404), ("/healthz", 200)):
            response = await client.get(path)
            assert response.status_code == status
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["cache-control"] == "no-store"
            assert response.headers["strict-transport-security"].startswith("max-age=31536000")
            assert response.headers["x-frame-options"] == "DENY"
        response = await client.get("/partners", headers={"X-Request-ID": "trace-42"})
        assert response.headers["x-request-id"] == "trace-42"
        response = await client.get("/partners", headers={"X-Request-ID": "bad id;<script>"})
        assert str(uuid.UUID(response.headers["x-request-id"])) == response.headers["x-request-id"]
    async with client_of(settings) as client:
        assert "strict-transport-security" not in (await client.get("/healthz")).headers


async def test_docs_load_their_assets_from_the_package(anon: httpx.AsyncClient) -> None:
    page = await anon.get("/docs")
    assert page.status_code == 200
    assert "cdn." not in page.text
    assert "unpkg" not in page.text
    assert "/docs/assets/swagger-ui-bundle.js" in page.text
    assert (await anon.get("/docs/oauth2-redirect")).status_code == 200
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        response = await anon.get(f"/docs/assets/{asset}")
        assert response.status_code == 200, asset
        assert "no-store" not in response.headers.get("cache-control", "")


async def test_cors_is_off_by_default_and_answers_preflight_when_configured(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    preflight = {
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    response = await api.options("/partners", headers=preflight)
    assert "access-control-allow-origin" not in response.headers
    response = await api.get("/partners", headers={"Origin": "https://app.example.com"})
    assert "access-control-allow-origin" not in response.headers

    cors = settings.model_copy(update={"cors_allowed_origins": "https://app.example.com"})
    async with client_of(cors) as client:
        response = await client.options("/partners", headers=preflight)
        assert response.status_code == 200, response.text
        assert response.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "POST" in response.headers["access-control-allow-methods"]
        allowed = response.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed
        assert "content-type" in allowed
        response = await client.options(
            "/partners", headers={**preflight, "Origin": "https://evil.example"}
        )
        assert response.status_code == 400
        assert "access-control-allow-origin" not in response.headers
        response = await client.get(
            "/partners", headers={**AUTH, "Origin": "https://app.example.com"}
        )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "x-ratelimit-remaining" in response.headers["access-control-expose-headers"].lower()


# Rate limits


async def test_rate_limit_is_shared_by_two_api_processes_through_redis(
    settings: Settings,
) -> None:
    limited = settings.model_copy(
        update={"rate_limit_requests": 5, "rate_limit_window_seconds": 3600}
    )
    async with client_of(limited, **AUTH) as first, client_of(limited, **AUTH) as second:
        remaining = []
        for client in (first, second, first, second, first):
            response = await client.get("/partners")
            assert response.status_code == 200
            assert response.headers["x-ratelimit-limit"] == "5"
            assert 0 < int(response.headers["x-ratelimit-reset"]) <= 3600
            remaining.append(int(response.headers["x-ratelimit-remaining"]))
        assert remaining == [4, 3, 2, 1, 0]
        for client in (second, first):
            response = await client.get("/partners")
            detail = error_body(response, 429, "rate_limited")
            assert detail["limit"] == 5
            retry_after = int(response.headers["retry-after"])
            assert 0 < retry_after <= 3600
            assert detail["retry_after_seconds"] == retry_after
            assert response.headers["x-ratelimit-remaining"] == "0"


async def test_rate_limit_counts_per_process_without_redis(settings: Settings) -> None:
    local = settings.model_copy(
        update={"redis_url": None, "rate_limit_requests": 2, "rate_limit_window_seconds": 3600}
    )
    async with client_of(local, **AUTH) as first, client_of(local, **AUTH) as second:
        for client in (first, first):
            assert (await client.get("/partners")).status_code == 200
        assert (await first.get("/partners")).status_code == 429
        # The other process counts on its own.
        assert (await second.get("/partners")).headers["x-ratelimit-remaining"] == "1"


async def test_the_operator_can_be_exempted(settings: Settings) -> None:
    exempt = settings.model_copy(
        update={"rate_limit_requests": 1, "rate_limit_exempt_operator": True}
    )
    async with client_of(exempt, **AUTH) as client:
        for _ in range(3):
            response = await client.get("/partners")
            assert response.status_code == 200
            assert "x-ratelimit-limit" not in response.headers


async def test_failed_authentication_is_limited_per_address(settings: Settings) -> None:
    strict = settings.model_copy(
        update={"auth_failure_limit": 3, "auth_failure_window_seconds": 600}
    )
    async with client_of(strict) as client:
        for attempt in range(3):
            response = await client.get(
                "/partners", headers={"Authorization": f"Bearer sk_{attempt}"}
            )
            assert error_body(response, 401, "unauthorized") == "invalid API token"
            assert response.headers["x-ratelimit-remaining"] == str(2 - attempt)
        response = await client.get("/partners", headers={"Authorization": "Bearer sk_guess"})
        detail = error_body(response, 429, "rate_limited")
        assert detail["message"] == "too many failed authentications from this address"
        assert int(response.headers["retry-after"]) > 0
        # Even the right token waits: guessing must not be told apart from knowing.
        response = await client.get("/partners", headers=AUTH)
        assert response.status_code == 429


async def test_anonymous_requests_are_limited_per_address(settings: Settings) -> None:
    strict = settings.model_copy(update={"rate_limit_anonymous_requests": 3})
    async with client_of(strict) as anonymous:
        for path, status, remaining in (
            ("/healthz", 200, "2"),
            ("/partners", 401, "1"),  # no token: anonymous too
            ("/nowhere", 404, "0"),
        ):
            response = await anonymous.get(path)
            assert response.status_code == status, path
            assert response.headers["x-ratelimit-limit"] == "3"
            assert response.headers["x-ratelimit-remaining"] == remaining
        response = await anonymous.get("/healthz")
        assert error_body(response, 429, "rate_limited")["limit"] == 3
        error_body(await anonymous.get("/partners"), 429, "rate_limited")


# Batch size


async def test_batch_and_matrix_sizes_are_limited(settings: Settings) -> None:
    small = settings.model_copy(
        update={
            "max_runs_per_batch": 10,
            "max_questions_per_org": 4,
            "max_engines_per_org": 2,
            "max_countries_per_org": 2,
        }
    )
    async with client_of(small, **AUTH) as client:
        partner_id = await create_partner(client)
        setup = await create_org(
            client, partner_id, questions=3, engines=("openai", "anthropic"), locations=("US", "GB")
        )
        response = await client.post(f"/orgs/{setup.org_id}/evaluations")
        detail = error_body(response, 409, "batch_too_large")
        assert detail["limit"] == 10
        assert detail["runs"] == 12
        assert detail["over"] == 2
        assert "at most 10 are allowed, 2 over" in detail["message"]
        assert expect(await client.get(f"/orgs/{setup.org_id}/batches"), 200)["total"] == 0
        partner = expect(await client.get(f"/partners/{partner_id}"), 200)
        assert partner["reserved"] == "0.000000"

        questions = [f"Question number {n}?" for n in range(6)]
        for path, body, axis, over in (
            ("questions", {"questions": questions}, "questions", 2),
            ("engines", {"engines": ["openai", "anthropic", "linkup"]}, "engines", 1),
            ("locations", {"locations": ["US", "GB", "FR", "DE"]}, "countries", 2),
        ):
            response = await client.put(f"/orgs/{setup.org_id}/{path}", json=body)
            detail = error_body(response, 422, "matrix_too_large")
            assert (detail["axis"], detail["over"]) == (axis, over), detail


# The access log


async def test_access_log_is_one_json_line_per_request(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="senso.access"):
        await api.get("/partners", headers={"X-Request-ID": "req-1"})
        await api.get(f"/partners/{uuid.uuid4()}", headers={"X-Request-ID": "req-2"})
    lines = {r.request_id: r for r in caplog.records if r.name == "senso.access"}  # type: ignore[attr-defined]
    first, second = lines["req-1"], lines["req-2"]
    assert (first.principal, first.method, first.route, first.status) == (  # type: ignore[attr-defined]
        "admin", "GET", "/partners", 200
    )  # fmt: skip
    assert (second.route, second.status) == ("/partners/{partner_id}", 404)  # type: ignore[attr-defined]
    assert first.latency_ms >= 0  # type: ignore[attr-defined]


@pytest.fixture
def configured_logging() -> Iterator[None]:
    """The process's logging as `configure_logging` leaves it, put back as it was after."""
    loggers = [logging.getLogger(), *map(logging.getLogger, logging.root.manager.loggerDict)]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    try:
        yield
    finally:
        for lg, handlers, level, propagate in saved:
            lg.handlers[:], lg.level, lg.propagate = handlers, level, propagate


async def test_the_access_log_names_the_request_id_the_response_gave(
    settings: Settings, configured_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through the logging the API runs with, secrets scrubbed: a generated request id is
    not taken for one, so a client's X-Request-ID finds its line."""
    configure_logging(settings)
    async with client_of(settings, **AUTH) as client:
        given = [(await client.get("/partners")).headers["x-request-id"] for _ in range(3)]
    # The access log's lines are JSON whatever LOG_JSON says; other lines may be text.
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    logged = [line["request_id"] for line in lines if line.get("route") == "/partners"]
    assert logged == given
