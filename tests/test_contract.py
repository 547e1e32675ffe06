"""The OpenAPI contract holds: schemathesis sends generated requests, valid and invalid, to
every operation of the real API (served over HTTP, on Postgres, Redis and the SQS emulator),
and every answer must be no server error and match the document: a declared status, its
content type, headers and body schema.

Bounded: a fixed number of examples per operation and mode, no shrinking, no example
database, so the run takes the same few seconds every time; and in time, since every request
has its own timeout, the run can last no longer than examples × timeout.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from app.context import AppContext
from app.settings import Settings
from devtools.embedded import serve_api
from tests.conftest import API_TOKEN, make_settings

EXAMPLES = {GenerationMode.POSITIVE: 8, GenerationMode.NEGATIVE: 5}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


class ThreadedApi:
    """The API on an event loop of its own thread: schemathesis calls it synchronously."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.base_url = ""
        self._thread = threading.Thread(target=self._run, name="contract-api", daemon=True)

    def __enter__(self) -> ThreadedApi:
        self._thread.start()
        if not self._ready.wait(timeout=30) or self._error is not None:
            raise RuntimeError("the API did not start") from self._error
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with (
            AppContext.create(self._settings) as context,
            serve_api(self._settings, context) as base_url,
        ):
            self.base_url = base_url
            self._ready.set()
            await self._stop.wait()


@pytest.fixture
def served(postgres_url: str, queue_url: str, sqs_endpoint: str) -> Iterator[ThreadedApi]:
    contract = make_settings(
        postgres_url,
        queue_url,
        sqs_endpoint,
        # The fuzzer is the only client: its requests must not run into the rate limits.
        rate_limit_requests=1_000_000,
        rate_limit_anonymous_requests=1_000_000,
        auth_failure_limit=1_000_000,
    )
    with ThreadedApi(contract) as api:
        yield api


def test_every_operation_answers_as_the_document_says(served: ThreadedApi) -> None:
    schema = schemathesis.openapi.from_url(f"{served.base_url}/openapi.json", timeout=10)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()  # the document itself is valid
        operations.append(result.ok())
    assert len(operations) >= 20, [op.label for op in operations]
    failures: list[str] = []
    for operation in operations:
        raw = operation.definition.raw
        takes_input = bool(raw.get("parameters")) or "requestBody" in raw
        for mode, examples in EXAMPLES.items():
            if mode is GenerationMode.NEGATIVE and not takes_input:
                continue  # nothing to send that the document forbids

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def exercise(case: Any) -> None:
                case.call_and_validate(
                    base_url=served.base_url, headers=AUTH, checks=CHECKS, timeout=10
                )

            try:
                exercise()
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises a group
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)
