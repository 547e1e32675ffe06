"""Webhook endpoints through the HTTP API: registration with the secret shown once, listing,
updating, deleting, partner scoping, and the SSRF guard at registration (with the setting off,
as in production) and in the sender itself."""

from __future__ import annotations

import ipaddress
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook

from app.context import AppContext
from app.settings import Settings
from app.webhooks.sender import WebhookSender
from app.webhooks.signing import new_secret, signature
from app.webhooks.urls import UnsafeUrlError, check_url, refusal, system_resolver
from tests.conftest import make_settings, operator_client
from tests.db_checks import audit_actions
from tests.factories import create_partner, expect
from tests.test_api_management import partner_client
from tests.webhook_support import issue_certificates, receiver

PUBLIC_URL = "https://8.8.8.8/hooks"  # a public address: registration resolves nothing


@pytest.fixture
def settings(postgres_url: str, queue_url: str, sqs_endpoint: str) -> Settings:
    """As in production: https and public addresses only."""
    return make_settings(postgres_url, queue_url, sqs_endpoint, webhook_allow_insecure_urls=False)


async def register(
    client: httpx.AsyncClient, partner_id: str, *, url: str = PUBLIC_URL, **body: object
) -> dict[str, object]:
    created: dict[str, object] = expect(
        await client.post(
            f"/partners/{partner_id}/webhooks",
            json={"url": url, "events": ["batch.completed"], **body},
        ),
        201,
    )
    return created


async def test_an_endpoint_is_registered_listed_updated_and_deleted(
    api: httpx.AsyncClient, context: AppContext
) -> None:
    partner_id = await create_partner(api)
    async with partner_client(api, partner_id) as client:
        created = await register(
            client,
            partner_id,
            events=["batch.failed", "batch.completed", "batch.failed"],
            description="ops alerts",
        )
        secret = created["secret"]
        assert isinstance(secret, str)
        assert secret.startswith("whsec_")
        assert created["events"] == ["batch.failed", "batch.completed"]
        assert created["enabled"] is True
        assert created["failing_since"] is None
        webhook_id = str(created["id"])
        path = f"/partners/{partner_id}/webhooks/{webhook_id}"

        # The secret is shown once: never in a read or a list.
        read = expect(await client.get(path), 200)
        assert "secret" not in read
        assert read == {k: v for k, v in created.items() if k != "secret"}
        listed = expect(await client.get(f"/partners/{partner_id}/webhooks"), 200)
        assert listed["total"] == 1
        assert listed["items"] == [read]

        updated = expect(
            await client.patch(
                path, json={"events": ["metric.changed"], "description": None, "enabled": False}
            ),
            200,
        )
        assert updated["events"] == ["metric.changed"]
        assert updated["description"] is None
        assert updated["enabled"] is False
        assert "secret" not in updated

        assert (await client.delete(path)).status_code == 204
        assert expect(await client.get(path), 404)["error"] == "not_found"
        assert expect(await client.get(f"/partners/{partner_id}/webhooks"), 200)["total"] == 0

    assert await audit_actions(context, webhook_id) == [
        "webhook.created",
        "webhook.updated",
        "webhook.deleted",
    ]


INVALID = [
    ({"url": PUBLIC_URL, "events": []}, "events"),
    ({"url": PUBLIC_URL, "events": ["batch.started"]}, "events"),
    ({"url": PUBLIC_URL}, "events"),
    ({"events": ["batch.completed"]}, "url"),
    ({"url": PUBLIC_URL, "events": ["batch.failed"], "description": "x" * 501}, "description"),
]


async def test_an_invalid_registration_is_refused(api: httpx.AsyncClient) -> None:
    partner_id = await create_partner(api)
    for body, location in INVALID:
        error = expect(await api.post(f"/partners/{partner_id}/webhooks", json=body), 422)
        assert error["error"] == "validation_error"
        assert location in error["detail"][0]["loc"], (body, error)


async def test_a_partner_key_sees_only_its_own_endpoints(api: httpx.AsyncClient) -> None:
    mine, theirs = await create_partner(api), await create_partner(api)
    async with partner_client(api, mine) as me, partner_client(api, theirs) as other:
        hook = await register(me, mine)
        path = f"/partners/{mine}/webhooks/{hook['id']}"
        for response in (
            await other.get(path),
            await other.patch(path, json={"enabled": False}),
            await other.delete(path),
            await other.get(f"/partners/{mine}/webhooks"),
            await other.post(
                f"/partners/{mine}/webhooks", json={"url": PUBLIC_URL, "events": ["batch.failed"]}
            ),
            await other.get(f"{path}/deliveries"),
            await other.post(f"{path}/deliveries/{uuid.uuid4()}/redeliver"),
        ):
            assert expect(response, 404)["error"] == "not_found"
        # Under its own partner id, the other partner's endpoint does not exist either.
        assert (await other.get(f"/partners/{theirs}/webhooks/{hook['id']}")).status_code == 404
        assert expect(await other.get(f"/partners/{theirs}/webhooks"), 200)["total"] == 0
        assert expect(await me.get(path), 200)["enabled"] is True

    # The operator sees and manages every partner's endpoints.
    assert expect(await api.get(f"/partners/{mine}/webhooks"), 200)["total"] == 1
    assert expect(await api.patch(path, json={"enabled": False}), 200)["enabled"] is False
    assert (await api.get(f"/partners/{uuid.uuid4()}/webhooks")).status_code == 404


REFUSED = [
    ("http://8.8.8.8/hooks", "webhook URLs must use https"),
    ("https://127.0.0.1/hooks", "127.0.0.1 is a loopback address"),
    ("https://10.1.2.3/hooks", "10.1.2.3 is a private address"),
    ("https://192.168.0.10:8443/hooks", "192.168.0.10 is a private address"),
    ("https://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local address"),
    ("https://[::1]/hooks", "::1 is a loopback address"),
    ("https://[::ffff:10.0.0.1]/hooks", "is a private address"),
    ("https://0.0.0.0/hooks", "0.0.0.0 is an unspecified address"),
    ("https://224.0.0.1/hooks", "224.0.0.1 is a multicast address"),
    ("https://localhost/hooks", "localhost resolves to"),
    ("https://no-such-host.invalid/hooks", "no-such-host.invalid does not resolve"),
    ("ftp://8.8.8.8/hooks", "webhook URLs must use https"),
    ("https:///hooks", "the URL has no host"),
]


async def test_registration_refuses_urls_that_could_reach_inside(api: httpx.AsyncClient) -> None:
    partner_id = await create_partner(api)
    for url, why in REFUSED:
        response = await api.post(
            f"/partners/{partner_id}/webhooks", json={"url": url, "events": ["batch.completed"]}
        )
        error = expect(response, 422)
        assert error["error"] == "webhook_url_refused", url
        assert why in error["detail"], (url, error["detail"])
    assert expect(await api.get(f"/partners/{partner_id}/webhooks"), 200)["total"] == 0


async def test_an_update_to_a_refused_url_changes_nothing(api: httpx.AsyncClient) -> None:
    partner_id = await create_partner(api)
    hook = await register(api, partner_id)
    path = f"/partners/{partner_id}/webhooks/{hook['id']}"
    error = expect(await api.patch(path, json={"url": "https://[fe80::1]/x"}), 422)
    assert error["error"] == "webhook_url_refused"
    assert "link-local" in error["detail"]
    assert expect(await api.patch(path, json={"url": None}), 422)["error"] == "invalid_webhook"
    assert expect(await api.get(path), 200)["url"] == PUBLIC_URL


async def test_the_insecure_setting_allows_http_and_loopback_only(
    postgres_url: str, queue_url: str, sqs_endpoint: str
) -> None:
    settings = make_settings(
        postgres_url, queue_url, sqs_endpoint, webhook_allow_insecure_urls=True
    )
    async with (
        AppContext.create(settings) as context,
        operator_client(settings, context) as api,
    ):
        partner_id = await create_partner(api)
        for url in ("http://127.0.0.1:9/hooks", "http://localhost/hooks", "http://[::1]/x"):
            await register(api, partner_id, url=url)
        error = expect(
            await api.post(
                f"/partners/{partner_id}/webhooks",
                json={"url": "http://10.0.0.7/hooks", "events": ["batch.failed"]},
            ),
            422,
        )
        assert "10.0.0.7 is a private address" in error["detail"]


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("127.0.0.2", "a loopback address"),
        ("100.64.0.1", "not a public address"),
        ("172.16.5.4", "a private address"),
        ("fd00::1", "a private address"),
        ("fe80::1", "a link-local address"),
        ("ff02::1", "a multicast address"),
        ("::", "an unspecified address"),
        ("240.0.0.1", "a private address"),
        ("::ffff:169.254.1.1", "a link-local address"),
        ("64:ff9b::a00:1", "a private address"),
        ("64:ff9b::808:808", None),
        ("2002:7f00:1::", "a loopback address"),
    ],
)
def test_which_addresses_are_refused(address: str, why: str | None) -> None:
    assert refusal(ipaddress.ip_address(address), allow_insecure=False) == why


async def test_every_address_a_name_resolves_to_is_checked() -> None:
    async def split_answer(host: str, port: int) -> list[str]:
        return ["8.8.8.8", "10.0.0.1"]

    with pytest.raises(UnsafeUrlError, match=r"hooks\.example resolves to 10\.0\.0\.1"):
        await check_url("https://hooks.example/x", allow_insecure=False, resolver=split_answer)
    target = await check_url("https://localhost/x", allow_insecure=True, resolver=system_resolver)
    assert target.address.is_loopback


async def test_the_sender_connects_to_the_address_it_checked(settings: Settings) -> None:
    """The name is resolved once per attempt, by the guard, and the request goes to that
    address with the registered name as its Host: a second lookup (a rebinding DNS answer)
    never decides where it goes. `hooks.example` resolves nowhere but through the guard."""
    lookups: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    insecure = settings.model_copy(update={"webhook_allow_insecure_urls": True})
    sender = WebhookSender(insecure, resolver=resolver)
    try:
        async with receiver() as hooks:
            port = httpx.URL(hooks.url).port
            result = await sender.post(
                f"http://hooks.example:{port}/hooks?x=1", b"{}", {"webhook-id": "evt_1"}
            )
            assert result.succeeded, result
            assert lookups == ["hooks.example"]
            (request,) = hooks.requests
            assert request.path == "/hooks"
            assert request.headers["host"] == f"hooks.example:{port}"
            assert request.headers["webhook-id"] == "evt_1"
            assert request.headers["content-type"] == "application/json"
    finally:
        await sender.aclose()

    # With the setting off, the same answer is refused before any connection.
    strict = WebhookSender(settings, resolver=resolver)
    try:
        refused = await strict.post("https://hooks.example/hooks", b"{}", {})
    finally:
        await strict.aclose()
    assert refused.status_code is None
    assert refused.error == "refused: hooks.example resolves to 127.0.0.1, a loopback address"


async def test_over_tls_the_registered_name_is_verified_on_the_checked_address(
    settings: Settings, tmp_path: Path
) -> None:
    """The connection goes to the checked address, and the server must still prove it is the
    registered name: SNI and the certificate check use the name, not the address."""

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    certificates = issue_certificates(tmp_path, "hooks.example")
    loopback = settings.model_copy(update={"webhook_allow_insecure_urls": True})
    sender = WebhookSender(loopback, resolver=resolver, verify=certificates.client_context())
    try:
        async with receiver(certificates=certificates) as hooks:
            port = httpx.URL(hooks.url).port
            result = await sender.post(f"https://hooks.example:{port}/hooks", b"{}", {})
            assert result.succeeded, result
            (request,) = hooks.requests
            assert request.headers["host"] == f"hooks.example:{port}"
            # Another name on the same address does not pass for it.
            other = await sender.post(f"https://other.example:{port}/hooks", b"{}", {})
            assert other.status_code is None
            assert other.error is not None
            assert "CERTIFICATE_VERIFY_FAILED" in other.error, other.error
            assert len(hooks.requests) == 1
    finally:
        await sender.aclose()


def test_the_default_retry_schedule_lasts_more_than_a_day() -> None:
    delays = Settings().webhook_retry_delays
    assert delays == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert sum(delays) > 24 * 3600
    assert Settings(webhook_retry_schedule=" 90, 2m ,1H").webhook_retry_delays == (90, 120, 3600)
    for bad in ("", "5s,,1m", "0s", "-5", "5d", "1.5h"):
        with pytest.raises(ValidationError, match="not a duration"):
            Settings(webhook_retry_schedule=bad)


def test_signatures_follow_standard_webhooks() -> None:
    """The example of the Standard Webhooks specification's reference implementations."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert (
        signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )
    # And the package of the specification agrees, for a secret of ours.
    ours = new_secret()
    at = datetime.fromtimestamp(1614265330, UTC)
    assert Webhook(ours).sign("evt_1", at, body) == signature(ours, "evt_1", 1614265330, body)
    assert new_secret() != ours
