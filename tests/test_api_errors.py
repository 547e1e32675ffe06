"""Every error the API returns: its status and its `{"error": ..., "detail": ...}` body.

All requests go over real HTTP to the API served by uvicorn, backed by a fresh Postgres
database, a fresh SQS queue on the moto server and the machine's Redis.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from mypy_boto3_sqs import SQSClient
from pydantic import SecretStr

from app.context import AppContext
from app.settings import Settings
from tests.conftest import API_TOKEN, make_settings, operator_client
from tests.factories import OrgSetup, create_org, create_partner, expect

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
MISSING = str(uuid.UUID(int=1))


def error_body(response: httpx.Response, status: int, code: str) -> Any:
    """Assert the status and the one error shape; return the detail."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert body["error"] == code, body
    return body["detail"]


def validation_locs(detail: Any) -> list[list[Any]]:
    assert isinstance(detail, list), detail
    assert detail, detail
    return [item["loc"] for item in detail]


@pytest.fixture
async def anon(api: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the same server that sends no Authorization header."""
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
        yield client


@asynccontextmanager
async def other_api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A second API server (with its own clients) on other settings."""
    async with (
        AppContext.create(settings) as context,
        operator_client(settings, context) as client,
    ):
        yield client


async def queued_messages(sqs: SQSClient, queue_url: str) -> int:
    attributes = await asyncio.to_thread(
        sqs.get_queue_attributes,
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    values = attributes["Attributes"]
    return int(values["ApproximateNumberOfMessages"]) + int(
        values["ApproximateNumberOfMessagesNotVisible"]
    )


async def org_with_matrix(
    api: httpx.AsyncClient, *, balance: str = "100.00", price: str = "0.05"
) -> OrgSetup:
    partner_id = await create_partner(api, balance=balance, price=price)
    return await create_org(api, partner_id)


# --- authentication -------------------------------------------------------------------------

BAD_AUTHORIZATION: list[tuple[str, dict[str, str], str]] = [
    ("missing", {}, "send 'Authorization: Bearer <token>'"),
    ("basic", {"Authorization": "Basic dXNlcjpwYXNz"}, "send 'Authorization: Bearer <token>'"),
    (
        "other scheme",
        {"Authorization": f"Token {API_TOKEN}"},
        "send 'Authorization: Bearer <token>'",
    ),
    ("no scheme", {"Authorization": API_TOKEN}, "send 'Authorization: Bearer <token>'"),
    ("no token", {"Authorization": "Bearer"}, "send 'Authorization: Bearer <token>'"),
    ("wrong token", {"Authorization": "Bearer wrong-token"}, "invalid API token"),
    ("token + suffix", {"Authorization": f"Bearer {API_TOKEN}x"}, "invalid API token"),
    ("token prefix", {"Authorization": f"Bearer {API_TOKEN[:-1]}"}, "invalid API token"),
    ("unknown key", {"Authorization": "Bearer sk_" + "a" * 43}, "invalid API token"),
]


PROTECTED = [
    ("POST", "/partners", {"name": "acme"}),
    ("GET", "/partners", None),
    ("GET", f"/partners/{MISSING}", None),
    ("POST", f"/partners/{MISSING}/topups", {"amount": "1"}),
    ("POST", f"/partners/{MISSING}/api-keys", {}),
    ("POST", "/orgs", {"name": "acme", "partner_id": MISSING}),
    ("GET", "/orgs", None),
    ("GET", f"/orgs/{MISSING}", None),
    ("PATCH", f"/orgs/{MISSING}", {"name": "x"}),
    ("PUT", f"/orgs/{MISSING}/questions", {"questions": ["What is best?"]}),
    ("PUT", f"/orgs/{MISSING}/engines", {"engines": ["openai"]}),
    ("PUT", f"/orgs/{MISSING}/locations", {"locations": ["US"]}),
    ("POST", f"/orgs/{MISSING}/evaluations", None),
    ("GET", f"/orgs/{MISSING}/batches", None),
    ("GET", f"/batches/{MISSING}", None),
    ("GET", f"/batches/{MISSING}/results", None),
]


async def test_bad_or_missing_credentials_are_401(anon: httpx.AsyncClient) -> None:
    for case, headers, detail in BAD_AUTHORIZATION:
        response = await anon.get("/partners", headers=headers)
        assert response.status_code == 401, f"{case}: {response.status_code} {response.text}"
        assert error_body(response, 401, "unauthorized") == detail, case
        assert response.headers["www-authenticate"] == "Bearer", case
    # The same token with a lower-case scheme is accepted.
    response = await anon.get("/partners", headers={"Authorization": f"bearer {API_TOKEN}"})
    assert expect(response, 200)["total"] == 0
    # Every endpoint but health and readiness needs the token.
    for method, path, body in PROTECTED:
        response = await anon.request(method, path, json=body)
        assert response.status_code == 401, f"{method} {path}: {response.text}"
        error_body(response, 401, "unauthorized")


async def test_unauthenticated_request_is_rejected_before_the_body_is_looked_at(
    anon: httpx.AsyncClient, api: httpx.AsyncClient
) -> None:
    # A well-formed but invalid body without credentials is a 401, not a 422 …
    response = await anon.post("/partners", json={"name": 5})
    error_body(response, 401, "unauthorized")
    # … and so must a malformed one be: an anonymous caller learns nothing about validation.
    response = await anon.post(
        "/partners", content=b"{not json", headers={"content-type": "application/json"}
    )
    error_body(response, 401, "unauthorized")
    partners = expect(await api.get("/partners"), 200)
    assert partners["total"] == 0


async def test_unauthenticated_requests_change_nothing(
    anon: httpx.AsyncClient, api: httpx.AsyncClient, sqs: SQSClient, queue_url: str
) -> None:
    setup = await org_with_matrix(api)
    error_body(await anon.post(f"/orgs/{setup.org_id}/evaluations"), 401, "unauthorized")
    wrong = {"Authorization": "Bearer nope"}
    response = await anon.post(f"/partners/{setup.partner_id}/topups", json={"amount": "5"})
    error_body(response, 401, "unauthorized")
    response = await anon.post(
        f"/partners/{setup.partner_id}/topups", json={"amount": "5"}, headers=wrong
    )
    error_body(response, 401, "unauthorized")
    assert expect(await api.get(f"/orgs/{setup.org_id}/batches"), 200)["total"] == 0
    assert expect(await api.get(f"/partners/{setup.partner_id}"), 200)["balance"] == "100.000000"
    assert await queued_messages(sqs, queue_url) == 0


# --- health, readiness, documentation -------------------------------------------------------


async def test_readyz_is_503_naming_the_failed_dependency(
    postgres_url: str, queue_url: str, sqs_endpoint: str
) -> None:
    cases = {
        "redis": make_settings(
            postgres_url, queue_url, sqs_endpoint, redis_url=SecretStr("redis://127.0.0.1:1/0")
        ),
        "queue": make_settings(postgres_url, f"{queue_url}-missing", sqs_endpoint),
        "database": make_settings(
            "postgresql+asyncpg://postgres@127.0.0.1:1/none", queue_url, sqs_endpoint
        ),
    }
    for down, settings in cases.items():
        async with other_api(settings) as client:
            response = await client.get("/readyz")
            detail = error_body(response, 503, "not_ready")
            # Liveness does not depend on the dependencies.
            assert expect(await client.get("/healthz"), 200) == {"status": "ok"}
            if down == "database":
                # Business endpoints answer 503 with the JSON error shape, without the cause.
                response = await client.get("/partners")
                assert error_body(response, 503, "database_unavailable") == (
                    "the database is not answering; try again shortly"
                )
                assert response.headers["retry-after"] == "5"
        assert detail["failed"] == [down], (down, detail)
        assert set(detail["checks"]) == {"database", "queue", "redis"}, detail
        for name, outcome in detail["checks"].items():
            if name == down:
                assert outcome not in ("ok", ""), detail
            else:
                assert outcome == "ok", (down, detail)
        if down == "queue":
            assert detail["checks"]["queue"] == "QueueDoesNotExist"


async def test_health_readiness_and_docs_need_no_token(anon: httpx.AsyncClient) -> None:
    assert expect(await anon.get("/healthz"), 200) == {"status": "ok"}
    assert expect(await anon.get("/readyz"), 200) == {
        "status": "ready",
        "checks": {"database": "ok", "queue": "ok", "redis": "ok"},
    }
    schema = expect(await anon.get("/openapi.json"), 200)
    assert schema["info"]["title"] == "senso org-evaluation control plane"
    for path in (
        "/partners",
        "/partners/{partner_id}/topups",
        "/partners/{partner_id}/api-keys",
        "/orgs",
        "/orgs/{org_id}",
        "/orgs/{org_id}/questions",
        "/orgs/{org_id}/engines",
        "/orgs/{org_id}/locations",
        "/orgs/{org_id}/evaluations",
        "/orgs/{org_id}/batches",
        "/batches/{batch_id}",
        "/batches/{batch_id}/results",
        "/healthz",
        "/readyz",
    ):
        assert path in schema["paths"], path
    docs = await anon.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in docs.text


async def test_openapi_declares_the_bearer_authentication(anon: httpx.AsyncClient) -> None:
    """Clients generated from the schema, and /docs' "Try it out", need to know about the token."""
    schema = expect(await anon.get("/openapi.json"), 200)
    schemes = schema.get("components", {}).get("securitySchemes", {})
    bearer = [
        name
        for name, scheme in schemes.items()
        if scheme.get("type") == "http" and scheme.get("scheme", "").lower() == "bearer"
    ]
    assert bearer, f"no HTTP bearer security scheme declared: {schemes}"
    operation = schema["paths"]["/orgs/{org_id}/evaluations"]["post"]
    assert any(bearer[0] in requirement for requirement in operation.get("security", [])), (
        operation.get("security")
    )
    assert not schema["paths"]["/healthz"]["get"].get("security")


# --- routing --------------------------------------------------------------------------------


async def test_unknown_route_and_wrong_method_are_json_errors(
    api: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    assert error_body(await api.get("/nope"), 404, "not_found") == "Not Found"
    assert error_body(await api.post("/orgs/x/y/z"), 404, "not_found") == "Not Found"
    assert error_body(await anon.get("/nope"), 404, "not_found") == "Not Found"
    response = await api.delete("/partners")
    assert error_body(response, 405, "method_not_allowed") == "Method Not Allowed"
    response = await api.post("/healthz")
    assert error_body(response, 405, "method_not_allowed") == "Method Not Allowed"


async def test_405_says_which_methods_are_allowed(api: httpx.AsyncClient) -> None:
    """RFC 9110 §15.5.6: a 405 response MUST carry an Allow header."""
    response = await api.delete(f"/batches/{MISSING}")
    error_body(response, 405, "method_not_allowed")
    assert response.headers.get("allow") == "GET", dict(response.headers)


# --- request validation ---------------------------------------------------------------------

NON_UUID_PATHS = [
    ("GET", "/partners/not-a-uuid", None, "partner_id"),
    ("POST", "/partners/123/topups", {"amount": "1"}, "partner_id"),
    ("GET", "/orgs/not-a-uuid", None, "org_id"),
    ("PATCH", "/orgs/not-a-uuid", {"name": "x"}, "org_id"),
    ("PUT", "/orgs/not-a-uuid/locations", {"locations": ["US"]}, "org_id"),
    ("POST", "/orgs/not-a-uuid/evaluations", None, "org_id"),
    ("GET", "/orgs/not-a-uuid/batches", None, "org_id"),
    ("GET", "/batches/not-a-uuid", None, "batch_id"),
    ("GET", "/batches/1234/results", None, "batch_id"),
]


async def test_malformed_json_and_invalid_trigger_bodies_are_422(api: httpx.AsyncClient) -> None:
    setup = await org_with_matrix(api)
    for method, path in (
        ("POST", "/partners"),
        ("POST", "/orgs"),
        ("PATCH", f"/orgs/{setup.org_id}"),
        ("PUT", f"/orgs/{setup.org_id}/questions"),
        ("POST", f"/orgs/{setup.org_id}/evaluations"),
    ):
        response = await api.request(
            method, path, content=b'{"name": ', headers={"content-type": "application/json"}
        )
        detail = error_body(response, 422, "validation_error")
        assert detail[0]["type"] == "json_invalid", f"{method} {path}: {detail}"
    # The trigger's optional body is validated too.
    for body, loc in (
        ({"triggered_by": 5}, ["body", "triggered_by"]),
        ({"triggered_by": ""}, ["body", "triggered_by"]),
        ({"triggered_by": "x" * 101}, ["body", "triggered_by"]),
        ({"user_id": ["u"]}, ["body", "user_id"]),
        ([1, 2], ["body"]),
    ):
        response = await api.post(f"/orgs/{setup.org_id}/evaluations", json=body)
        detail = error_body(response, 422, "validation_error")
        assert loc in validation_locs(detail), (body, detail)
    # Nothing was triggered by the broken evaluation requests.
    assert expect(await api.get(f"/orgs/{setup.org_id}/batches"), 200)["total"] == 0


WRONG_TYPES: list[tuple[str, str, Any, list[str]]] = [
    ("POST", "/partners", None, ["body"]),
    ("POST", "/partners", {"name": ["acme"]}, ["body", "name"]),
    ("POST", "/partners", {"name": ""}, ["body", "name"]),
    ("POST", "/partners", {"name": "a", "balance": "abc"}, ["body", "balance"]),
    ("POST", "/partners", {"name": "a", "balance": "-1"}, ["body", "balance"]),
    ("POST", "/partners", {"name": "a", "balance": "NaN"}, ["body", "balance"]),
    # NUMERIC(18, 6): at most 12 digits before the point.
    ("POST", "/partners", {"name": "a", "balance": "1000000000000"}, ["body", "balance"]),
    ("POST", "/partners", {"name": "a", "price_per_run": "0.0000001"}, ["body", "price_per_run"]),
    ("POST", "/orgs", {"name": 123}, ["body", "name"]),
    ("POST", "/orgs", {"name": "   "}, ["body", "name"]),
    ("POST", "/orgs", {"name": "a", "aliases": "x"}, ["body", "aliases"]),
    ("POST", "/orgs", {"name": "a", "active": "maybe"}, ["body", "active"]),
    ("POST", "/orgs", {"name": "a", "partner_id": "nope"}, ["body", "partner_id"]),
    ("GET", "/partners?limit=0", None, ["query", "limit"]),
    ("GET", "/orgs?limit=501", None, ["query", "limit"]),
    ("GET", "/orgs?offset=-1", None, ["query", "offset"]),
    ("GET", "/partners?limit=ten", None, ["query", "limit"]),
    ("GET", "/orgs?active=perhaps", None, ["query", "active"]),
    ("GET", "/orgs?partner_id=42", None, ["query", "partner_id"]),
    ("GET", f"/batches/{MISSING}/results?limit=0", None, ["query", "limit"]),
]


async def test_invalid_path_query_and_body_values_are_422(api: httpx.AsyncClient) -> None:
    for method, path, body, name in NON_UUID_PATHS:
        detail = error_body(await api.request(method, path, json=body), 422, "validation_error")
        assert validation_locs(detail) == [["path", name]], f"{method} {path}: {detail}"
        assert {"loc", "msg", "type"} <= set(detail[0])
    for method, path, body, loc in WRONG_TYPES:
        response = await api.request(method, path, json=body)
        assert response.status_code == 422, f"{method} {path} {body}: {response.text}"
        detail = error_body(response, 422, "validation_error")
        assert loc in validation_locs(detail), (method, path, body, detail)
    assert expect(await api.get("/partners"), 200)["total"] == 0


# --- partners -------------------------------------------------------------------------------


async def test_duplicate_or_unknown_partner(api: httpx.AsyncClient) -> None:
    await create_partner(api, name="Acme Reseller")
    for name in ("Acme Reseller", "  Acme Reseller "):
        response = await api.post("/partners", json={"name": name})
        detail = error_body(response, 409, "partner_exists")
        assert detail == "a partner named 'Acme Reseller' already exists"
    assert expect(await api.get("/partners"), 200)["total"] == 1

    message = f"partner {MISSING} not found"
    assert error_body(await api.get(f"/partners/{MISSING}"), 404, "not_found") == message
    response = await api.post(f"/partners/{MISSING}/topups", json={"amount": "1"})
    assert error_body(response, 404, "not_found") == message
    response = await api.post(f"/partners/{MISSING}/api-keys", json={})
    assert error_body(response, 404, "not_found") == message
    response = await api.post("/orgs", json={"partner_id": MISSING, "name": "Acme"})
    assert error_body(response, 404, "not_found") == message
    # With the operator token an org needs to say whose it is.
    response = await api.post("/orgs", json={"name": "Acme"})
    assert error_body(response, 422, "partner_required") == "partner_id is required"
    assert expect(await api.get("/orgs"), 200)["total"] == 0


async def test_blank_partner_name_is_422(api: httpx.AsyncClient) -> None:
    response = await api.post("/partners", json={"name": "   "})
    detail = error_body(response, 422, "validation_error")
    assert ["body", "name"] in validation_locs(detail)
    assert expect(await api.get("/partners"), 200)["total"] == 0


async def test_top_up_needs_a_positive_exact_amount(api: httpx.AsyncClient) -> None:
    partner_id = await create_partner(api, balance="1.00")
    for amount in ("0", "0.000000", "-1", "-0.01"):
        response = await api.post(f"/partners/{partner_id}/topups", json={"amount": amount})
        detail = error_body(response, 422, "validation_error")
        assert validation_locs(detail) == [["body", "amount"]], amount
        assert detail[0]["type"] == "greater_than", detail
    for body in ({}, {"amount": "0.0000001"}, {"amount": "ten"}, {"amount": None}):
        response = await api.post(f"/partners/{partner_id}/topups", json=body)
        detail = error_body(response, 422, "validation_error")
        assert validation_locs(detail) == [["body", "amount"]], body
    assert expect(await api.get(f"/partners/{partner_id}"), 200)["balance"] == "1.000000"


async def test_top_up_overflowing_the_balance_is_a_client_error(api: httpx.AsyncClient) -> None:
    """The largest balance a partner can have is 999999999999.999999 (NUMERIC(18, 6))."""
    partner_id = await create_partner(api, balance="999999999999.000000")
    response = await api.post(f"/partners/{partner_id}/topups", json={"amount": "999999999999"})
    assert response.status_code == 422, f"{response.status_code}: {response.text}"
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert body["error"] != "internal_error", body
    partner = expect(await api.get(f"/partners/{partner_id}"), 200)
    assert partner["balance"] == "999999999999.000000"


# --- orgs -----------------------------------------------------------------------------------


async def test_invalid_domain_is_422_naming_it(api: httpx.AsyncClient) -> None:
    partner_id = await create_partner(api)
    body = {"partner_id": partner_id, "name": "Acme", "domains": ["acme.com", "not a domain"]}
    detail = error_body(await api.post("/orgs", json=body), 422, "validation_error")
    assert validation_locs(detail) == [["body", "domains", 1]]
    assert "'not a domain'" in detail[0]["msg"]

    org_id = expect(await api.post("/orgs", json={"partner_id": partner_id, "name": "Acme"}), 201)[
        "id"
    ]
    for bad in ("localhost", "http://", "acme..com", "-acme.com", "acme.c"):
        response = await api.patch(f"/orgs/{org_id}", json={"domains": ["acme.com", bad]})
        detail = error_body(response, 422, "validation_error")
        assert validation_locs(detail) == [["body", "domains", 1]], bad
        assert f"'{bad}'" in detail[0]["msg"], detail
    assert expect(await api.get(f"/orgs/{org_id}"), 200)["domains"] == []


async def test_invalid_matrix_values_are_422_naming_them(api: httpx.AsyncClient) -> None:
    setup = await org_with_matrix(api)
    for code in ("UK", "XX", "USA", "", "EU", "1", "u s"):
        body = {"locations": ["us", code]}
        response = await api.put(f"/orgs/{setup.org_id}/locations", json=body)
        detail = error_body(response, 422, "validation_error")
        assert validation_locs(detail) == [["body", "locations", 1]], code
        assert f"'{code}' is not an ISO 3166-1 alpha-2 country code" in detail[0]["msg"], detail
    response = await api.put(
        f"/orgs/{setup.org_id}/engines", json={"engines": ["openai", "bard", "gpt-9"]}
    )
    detail = error_body(response, 422, "unknown_engine")
    assert detail.startswith("unknown engine 'bard'; unknown engine 'gpt-9';"), detail
    assert "available: openai" in detail  # the served ones are listed to help
    empty_or_invalid: list[tuple[str, dict[str, list[str]]]] = [
        ("questions", {"questions": []}),
        ("engines", {"engines": []}),
        ("locations", {"locations": []}),
        ("questions", {"questions": ["ab"]}),
        ("questions", {}),
    ]
    for path, body in empty_or_invalid:
        response = await api.put(f"/orgs/{setup.org_id}/{path}", json=body)
        detail = error_body(response, 422, "validation_error")
        assert validation_locs(detail)[0][:2] == ["body", path], (body, detail)
    # The matrix is untouched by the rejected requests.
    org = expect(await api.get(f"/orgs/{setup.org_id}"), 200)
    assert org["locations"] == ["GB", "US"]
    assert org["engines"] == ["anthropic", "brightdata_perplexity", "openai"]
    assert len(org["questions"]) == 5


async def test_unknown_org_or_batch_is_404(api: httpx.AsyncClient) -> None:
    message = f"org {MISSING} not found"
    org_routes = [row for row in PROTECTED if row[1].startswith(f"/orgs/{MISSING}")]
    assert len(org_routes) == 7
    for method, path, body in org_routes:
        response = await api.request(method, path, json=body)
        assert error_body(response, 404, "not_found") == message, f"{method} {path}"
    message = f"batch {MISSING} not found"
    assert error_body(await api.get(f"/batches/{MISSING}"), 404, "not_found") == message
    response = await api.get(f"/batches/{MISSING}/results")
    assert error_body(response, 404, "not_found") == message


# --- evaluations ----------------------------------------------------------------------------


async def test_inactive_org_or_empty_matrix_is_409(
    api: httpx.AsyncClient, sqs: SQSClient, queue_url: str
) -> None:
    partner_id = await create_partner(api)
    cases = {
        "questions and engines and locations": await create_org(
            api, partner_id, questions=0, engines=(), locations=()
        ),
        "engines and locations": await create_org(api, partner_id, engines=(), locations=()),
        "questions": await create_org(api, partner_id, questions=0),
        "locations": await create_org(api, partner_id, locations=()),
    }
    for missing, setup in cases.items():
        response = await api.post(f"/orgs/{setup.org_id}/evaluations")
        detail = error_body(response, 409, "empty_matrix")
        expected = " and no ".join(missing.split(" and "))
        assert detail == f"org {setup.org_id} has no {expected} to evaluate"
        assert expect(await api.get(f"/orgs/{setup.org_id}/batches"), 200)["total"] == 0

    # An inactive org is refused before its matrix is looked at.
    inactive = await create_org(api, partner_id, engines=())
    expect(await api.patch(f"/orgs/{inactive.org_id}", json={"active": False}), 200)
    response = await api.post(f"/orgs/{inactive.org_id}/evaluations")
    assert error_body(response, 409, "org_inactive") == f"org {inactive.org_id} is inactive"
    assert expect(await api.get(f"/orgs/{inactive.org_id}/batches"), 200)["total"] == 0
    assert await queued_messages(sqs, queue_url) == 0


async def test_insufficient_balance_is_402_with_exact_amounts(
    api: httpx.AsyncClient, sqs: SQSClient, queue_url: str
) -> None:
    setup = await org_with_matrix(api, balance="1.00", price="0.05")
    assert setup.runs == 30
    response = await api.post(f"/orgs/{setup.org_id}/evaluations")
    detail = error_body(response, 402, "insufficient_balance")
    assert detail == {
        "message": "the partner's balance cannot cover 30 run(s)",
        "required": "1.500000",
        "available": "1.000000",
    }
    assert "location" not in response.headers
    assert expect(await api.get(f"/orgs/{setup.org_id}/batches"), 200)["total"] == 0
    assert await queued_messages(sqs, queue_url) == 0

    # Topping up to exactly the estimate is enough.
    topped = await api.post(f"/partners/{setup.partner_id}/topups", json={"amount": "0.5"})
    assert expect(topped, 200)["balance"] == "1.500000"
    accepted = expect(await api.post(f"/orgs/{setup.org_id}/evaluations"), 202)
    assert (accepted["is_existing"], accepted["total_runs"]) == (False, 30)
    assert await queued_messages(sqs, queue_url) == 1

    # Amounts keep all six decimal places.
    tiny = await create_org(
        api, await create_partner(api, balance="0.000005", price="0.000001"), questions=1
    )
    assert tiny.runs == 6
    detail = error_body(
        await api.post(f"/orgs/{tiny.org_id}/evaluations"), 402, "insufficient_balance"
    )
    assert (detail["required"], detail["available"]) == ("0.000006", "0.000005")


async def test_trigger_without_a_queue_is_503(
    postgres_url: str, queue_url: str, sqs_endpoint: str
) -> None:
    settings = make_settings(postgres_url, queue_url, sqs_endpoint, sqs_queue_url=None)
    async with other_api(settings) as client:
        setup = await org_with_matrix(client)
        response = await client.post(f"/orgs/{setup.org_id}/evaluations")
        detail = error_body(response, 503, "queue_unavailable")
        assert "SQS_QUEUE_URL" in detail
        assert expect(await client.get(f"/orgs/{setup.org_id}/batches"), 200)["total"] == 0
