"""No credential in what is stored, logged or served: a provider's error quoting (a masked piece
of) our key is scrubbed before the run records it; the log filter scrubs every line."""

from __future__ import annotations

import logging
import uuid

import httpx
import pytest
from pydantic import SecretStr

from app.context import AppContext
from app.logging import SecretScrubber
from app.scrub import REDACTED, scrub_secrets
from app.settings import Settings
from devtools.embedded import run_worker_task
from devtools.emulator.config import EmulatorConfig, Fault
from devtools.emulator.server import EmulatorServer
from devtools.emulator.wiring import emulated_engine_settings
from tests.conftest import make_settings
from tests.factories import create_org, create_partner, expect, wait_for_batch

OPENAI_KEY = "sk-proj-Zq81vLx0Ty4b9W2mN7cR5kPdHs3u"
OPERATOR_TOKEN = "operator-token-4f9c2e7a1b"


@pytest.fixture
def settings(
    postgres_url: str, queue_url: str, sqs_endpoint: str, emulator: EmulatorServer
) -> Settings:
    return make_settings(
        postgres_url,
        queue_url,
        sqs_endpoint,
        **{
            **emulated_engine_settings(emulator.url),
            "openai_api_key": SecretStr(OPENAI_KEY),
        },
        analysis_provider="simulated",
        redis_key_prefix=f"test-{uuid.uuid4().hex[:12]}",
    )


def fragments(secret: str, size: int = 8) -> list[str]:
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


async def test_a_provider_error_quoting_our_key_is_scrubbed(
    api: httpx.AsyncClient,
    context: AppContext,
    emulator: EmulatorServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator.state.configure(EmulatorConfig(faults=[Fault(kind="key_rejected", provider="openai")]))
    partner_id = await create_partner(api)
    setup = await create_org(api, partner_id, questions=1, engines=("openai",), locations=("US",))
    batch_id = expect(await api.post(f"/orgs/{setup.org_id}/evaluations"), 202)["batch_id"]
    with caplog.at_level(logging.INFO):
        async with run_worker_task(context):
            batch = await wait_for_batch(api, batch_id)
    # What the provider said really quoted the key (masked): there is something to scrub.
    [call] = emulator.state.logged("openai")
    assert call.status == 401

    response = await api.get(f"/batches/{batch_id}/results")
    [run] = expect(response, 200)["runs"]
    assert run["status"] == "failed"
    assert "Incorrect API key provided: [redacted]" in run["error"], run["error"]
    served = response.text + str(batch)
    logged = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    for text in (served, logged):
        assert "****" not in text
        for piece in [*fragments(OPENAI_KEY), OPENAI_KEY[-4:] + "."]:
            assert piece not in text, piece


def test_scrubbing_replaces_what_looks_like_a_credential() -> None:
    settings = Settings(openai_api_key=SecretStr(OPENAI_KEY), api_token=SecretStr(OPERATOR_TOKEN))
    cases = {
        f"Incorrect API key provided: {OPENAI_KEY[:8]}********{OPENAI_KEY[-4:]}.": (
            f"Incorrect API key provided: {REDACTED}."
        ),
        "Authorization: Bearer abc.def-ghi": f"Authorization: {REDACTED}",
        "sent x-api-key=sk-ant-api03-abcdEFGH1234": f"sent x-api-key={REDACTED}",
        f"token {OPERATOR_TOKEN} refused": f"token {REDACTED} refused",
        f"our key is {OPENAI_KEY}!": f"our key is {REDACTED}!",
        f"a piece: {OPENAI_KEY[5:20]}": f"a piece: {REDACTED}",
        "opaque a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8": f"opaque {REDACTED}",
        "key •••• 9f2a": f"key {REDACTED} 9f2a",
    }
    for text, scrubbed in cases.items():
        assert scrub_secrets(text, settings) == scrubbed, text
    # Ordinary text, ids and numbers stay as they are.
    plain = "HTTP 429 rate_limit_exceeded for run 0b0c9c6e-8f7e-4a51-9e0b-1f2d3c4b5a69 (3 tries)"
    assert scrub_secrets(plain, settings) == plain


def test_the_log_filter_scrubs_message_and_fields() -> None:
    settings = Settings(openai_api_key=SecretStr(OPENAI_KEY))
    record = logging.LogRecord(
        "app.test", logging.WARNING, __file__, 1, "failed with %s", (OPENAI_KEY,), None
    )
    masked = f"{OPENAI_KEY[:8]}****{OPENAI_KEY[-4:]}"
    record.__dict__["error"] = f"HTTP 401: Incorrect API key provided: {masked}"
    assert SecretScrubber(settings).filter(record)
    assert record.getMessage() == f"failed with {REDACTED}"
    assert record.__dict__["error"] == f"HTTP 401: Incorrect API key provided: {REDACTED}"
