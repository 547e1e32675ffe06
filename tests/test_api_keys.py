"""API keys over the real API: listed without their secret, scoped, expiring, revoked and
rotated with a grace period. Time moves on the injected clock, never by waiting."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from app.context import AppContext
from app.db.models import ApiKey, AuditEvent
from tests.clock import OffsetClock
from tests.factories import create_org, create_partner, expect
from tests.test_api_errors import error_body


@asynccontextmanager
async def as_key(api: httpx.AsyncClient, key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=api.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        yield client


async def new_key(api: httpx.AsyncClient, partner_id: str, **body: Any) -> dict[str, Any]:
    created: dict[str, Any] = expect(
        await api.post(f"/partners/{partner_id}/api-keys", json=body), 201
    )
    return created


async def test_keys_are_listed_without_their_secret_and_stay_hashed(
    api: httpx.AsyncClient, context: AppContext, clock: OffsetClock
) -> None:
    partner_id = await create_partner(api)
    expires = (clock.now() + timedelta(days=30)).isoformat()
    created = await new_key(api, partner_id, name="ci", scopes=["read"], expires_at=expires)
    secret = created["key"]
    assert secret.startswith("sk_")
    assert created["prefix"] == secret[:10]
    assert (created["scopes"], created["status"], created["last_used_at"]) == (
        ["read"],
        "active",
        None,
    )
    everything = await new_key(api, partner_id)
    assert everything["scopes"] == ["manage", "read", "trigger"]
    assert everything["expires_at"] is None

    async with as_key(api, secret) as ci:
        assert expect(await ci.get(f"/partners/{partner_id}"), 200)["id"] == partner_id
    listed = await api.get(f"/partners/{partner_id}/api-keys")
    page = expect(listed, 200)
    assert secret not in listed.text
    assert everything["key"] not in listed.text
    assert page["total"] == 2
    assert [item["id"] for item in page["items"]] == [everything["id"], created["id"]]
    item = page["items"][1]
    assert "key" not in item
    assert "key_hash" not in item
    assert (item["name"], item["prefix"], item["scopes"]) == ("ci", secret[:10], ["read"])
    assert item["last_used_at"] is not None
    assert item["expires_at"] is not None
    assert item["created_at"] is not None

    async with context.sessions() as session:
        rows = list(await session.scalars(select(ApiKey)))
    assert {row.key_hash for row in rows} == {
        hashlib.sha256(k.encode()).hexdigest() for k in (secret, everything["key"])
    }
    assert not any(secret in str(vars(row)) for row in rows)


async def test_a_key_without_the_scope_gets_403(api: httpx.AsyncClient) -> None:
    partner_id = await create_partner(api)
    setup = await create_org(api, partner_id, questions=1, engines=("openai",), locations=("US",))
    reader = (await new_key(api, partner_id, scopes=["read"]))["key"]
    trigger = (await new_key(api, partner_id, scopes=["trigger"]))["key"]
    async with as_key(api, reader) as client:
        assert expect(await client.get(f"/orgs/{setup.org_id}"), 200)["id"] == setup.org_id
        for method, path, body in (
            ("post", "/orgs", {"name": "New"}),
            ("put", f"/orgs/{setup.org_id}/engines", {"engines": ["openai"]}),
            ("post", f"/orgs/{setup.org_id}/evaluations", None),
            ("post", f"/partners/{partner_id}/api-keys", {}),
        ):
            response = await client.request(method, path, json=body)
            detail = error_body(response, 403, "insufficient_scope")
            assert detail.startswith("this API key has no '"), detail
            assert "(it has: read)" in detail
    async with as_key(api, trigger) as client:
        expect(await client.post(f"/orgs/{setup.org_id}/evaluations"), 202)
        error_body(await client.get(f"/orgs/{setup.org_id}"), 403, "insufficient_scope")
        response = await client.patch(f"/orgs/{setup.org_id}", json={"active": False})
        error_body(response, 403, "insufficient_scope")


async def test_a_partner_manages_its_own_keys_only_and_cannot_escalate(
    api: httpx.AsyncClient,
) -> None:
    mine, other = await create_partner(api), await create_partner(api)
    manager = (await new_key(api, mine, scopes=["manage", "read"]))["key"]
    theirs = await new_key(api, other)
    async with as_key(api, manager) as client:
        made = await new_key(client, mine, name="deploy", scopes=["read"])
        assert made["scopes"] == ["read"]
        response = await client.post(f"/partners/{mine}/api-keys", json={"scopes": ["trigger"]})
        detail = error_body(response, 403, "insufficient_scope")
        assert detail == "a key cannot give a new key scopes it does not have: trigger"
        assert expect(await client.get(f"/partners/{mine}/api-keys"), 200)["total"] == 2
        for method, path in (
            ("get", f"/partners/{other}/api-keys"),
            ("post", f"/partners/{other}/api-keys"),
            ("post", f"/partners/{other}/api-keys/{theirs['id']}/revoke"),
            ("post", f"/partners/{mine}/api-keys/{theirs['id']}/revoke"),
        ):
            response = await client.request(method, path)
            assert response.status_code == 404, (path, response.text)
    async with as_key(api, theirs["key"]) as client:
        expect(await client.get(f"/partners/{other}"), 200)


async def test_expired_and_revoked_keys_get_401(api: httpx.AsyncClient, clock: OffsetClock) -> None:
    partner_id = await create_partner(api)
    soon = (clock.now() + timedelta(hours=1)).isoformat()
    expiring = await new_key(api, partner_id, expires_at=soon)
    revoked = await new_key(api, partner_id)
    past = (clock.now() - timedelta(seconds=1)).isoformat()
    response = await api.post(f"/partners/{partner_id}/api-keys", json={"expires_at": past})
    assert error_body(response, 422, "expiry_in_past").startswith("expires_at must be in the")
    response = await api.post(f"/partners/{partner_id}/api-keys", json={"scopes": []})
    error_body(response, 422, "validation_error")

    first = expect(await api.post(f"/partners/{partner_id}/api-keys/{revoked['id']}/revoke"), 200)
    assert first["status"] == "revoked"
    assert first["revoked_at"] is not None
    again = expect(await api.post(f"/partners/{partner_id}/api-keys/{revoked['id']}/revoke"), 200)
    assert again["revoked_at"] == first["revoked_at"]
    async with as_key(api, revoked["key"]) as client:
        response = await client.get(f"/partners/{partner_id}")
        assert error_body(response, 401, "unauthorized") == "this API key was revoked"

    async with as_key(api, expiring["key"]) as client:
        expect(await client.get(f"/partners/{partner_id}"), 200)
        clock.offset = timedelta(hours=1, seconds=1)
        response = await client.get(f"/partners/{partner_id}")
        assert error_body(response, 401, "unauthorized") == "this API key has expired"
    statuses = {
        item["id"]: item["status"]
        for item in expect(await api.get(f"/partners/{partner_id}/api-keys"), 200)["items"]
    }
    assert statuses == {expiring["id"]: "expired", revoked["id"]: "revoked"}


async def test_rotation_keeps_the_old_key_for_its_grace_period(
    api: httpx.AsyncClient, context: AppContext, clock: OffsetClock
) -> None:
    partner_id = await create_partner(api)
    old = await new_key(api, partner_id, name="prod", scopes=["read", "trigger"])
    rotate = f"/partners/{partner_id}/api-keys/{old['id']}/rotate"
    new = expect(await api.post(rotate, json={"grace_seconds": 600}), 201)
    assert new["key"] != old["key"]
    assert (new["name"], new["scopes"], new["status"]) == ("prod", ["read", "trigger"], "active")
    listed = {
        item["id"]: item
        for item in expect(await api.get(f"/partners/{partner_id}/api-keys"), 200)["items"]
    }
    assert listed[old["id"]]["replaced_by"] == new["id"]
    assert listed[old["id"]]["expires_at"] is not None
    error_body(await api.post(rotate), 409, "api_key_rotated")

    async with as_key(api, old["key"]) as before, as_key(api, new["key"]) as after:
        expect(await before.get(f"/partners/{partner_id}"), 200)
        expect(await after.get(f"/partners/{partner_id}"), 200)
        clock.offset = timedelta(seconds=601)
        response = await before.get(f"/partners/{partner_id}")
        assert error_body(response, 401, "unauthorized") == "this API key has expired"
        expect(await after.get(f"/partners/{partner_id}"), 200)

    # Rotating with no grace ends the old key at once; a revoked key cannot be rotated.
    third = expect(
        await api.post(
            f"/partners/{partner_id}/api-keys/{new['id']}/rotate", json={"grace_seconds": 0}
        ),
        201,
    )
    async with as_key(api, new["key"]) as client:
        error_body(await client.get(f"/partners/{partner_id}"), 401, "unauthorized")
    expect(await api.post(f"/partners/{partner_id}/api-keys/{third['id']}/revoke"), 200)
    response = await api.post(f"/partners/{partner_id}/api-keys/{third['id']}/rotate")
    error_body(response, 409, "api_key_revoked")
    missing = uuid.uuid4()
    response = await api.post(f"/partners/{partner_id}/api-keys/{missing}/rotate")
    assert error_body(response, 404, "not_found") == f"API key {missing} not found"

    async with context.sessions() as session:
        actions = list(
            await session.scalars(
                select(AuditEvent.action)
                .where(AuditEvent.resource_id == partner_id)
                .order_by(AuditEvent.occurred_at)
            )
        )
    assert actions.count("api_key.rotated") == 2
    assert actions.count("api_key.created") == 1
    assert actions.count("api_key.revoked") == 1
