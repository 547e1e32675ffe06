"""A webhook receiver for the tests: a real HTTP server on a loopback port that records every
request and answers as the test scripts it, and helpers to read the delivery log."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from app.context import AppContext
from app.db.models import WebhookAttempt, WebhookDelivery
from devtools.embedded import serve_asgi

# A status code to answer with, or "hang": hold the request unanswered (until the test ends).
Answer = int | Literal["hang"]


@dataclass(frozen=True, slots=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An ASGI app: each request takes the next scripted answer, then `default`."""

    script: list[Answer] = field(default_factory=list)
    default: Answer = 200
    requests: list[Received] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {name.decode(): value.decode() for name, value in scope["headers"]}
        self.requests.append(Received(path=scope["path"], headers=headers, body=body))
        answer = self.script.pop(0) if self.script else self.default
        if answer == "hang":
            # Answered only when the test ends: long after the sender gave up.
            await self.released.wait()
            answer = 200
        await send({"type": "http.response.start", "status": answer, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@contextlib.asynccontextmanager
async def receiver(
    *, default: Answer = 200, certificates: Certificates | None = None
) -> AsyncIterator[Receiver]:
    """Serve a Receiver on a free loopback port (over HTTPS with `certificates`); its `url` is
    that of /hooks."""
    app = Receiver(default=default)
    async with serve_asgi(
        app,
        lifespan="off",
        timeout_graceful_shutdown=1,
        ssl_certfile=certificates.chain if certificates else None,
        ssl_keyfile=certificates.key if certificates else None,
    ) as port:
        try:
            scheme = "https" if certificates is not None else "http"
            app.url = f"{scheme}://127.0.0.1:{port}/hooks"
            yield app
        finally:
            # A hanging answer is let go first, or the server's shutdown would wait for it.
            app.released.set()


async def attempts_of(context: AppContext, delivery_id: uuid.UUID) -> list[WebhookAttempt]:
    async with context.sessions() as session:
        rows = await session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id == delivery_id)
            .order_by(WebhookAttempt.attempt)
        )
        return list(rows)


async def deliveries_of(context: AppContext, endpoint_id: str) -> list[WebhookDelivery]:
    async with context.sessions() as session:
        rows = await session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == uuid.UUID(endpoint_id))
            .order_by(WebhookDelivery.created_at)
        )
        return list(rows)


@dataclass(frozen=True, slots=True)
class Certificates:
    """A test CA and a server certificate it signed for `name`, as files."""

    ca: str
    chain: str
    key: str

    def client_context(self) -> ssl.SSLContext:
        """What a client trusting only the test CA verifies with."""
        return ssl.create_default_context(cafile=self.ca)


def issue_certificates(directory: Path, name: str) -> Certificates:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "senso test CA")])
    now = datetime.now(UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = Certificates(
        ca=str(directory / "ca.pem"),
        chain=str(directory / "chain.pem"),
        key=str(directory / "key.pem"),
    )
    Path(files.ca).write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    Path(files.chain).write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    Path(files.key).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files
