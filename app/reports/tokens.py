"""Report link tokens: what a link shows and until when, signed so that nobody can widen it.

A token is `<payload>.<signature>`, both base64url without padding: the payload is compact
JSON naming the link's row, the org, its date range and its expiry; the signature is
HMAC-SHA256 over the payload with REPORT_SIGNING_KEY. The token is never stored: the row it
names is what makes a link listable and revocable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime

from pydantic import SecretStr

# Part of what is signed, so a signature made for anything else with the same key never
# passes as a report token.
_PURPOSE = b"senso-report-link-v1\x1f"
MAX_TOKEN_LENGTH = 512


@dataclass(frozen=True, slots=True)
class LinkClaims:
    link_id: uuid.UUID
    org_id: uuid.UUID
    date_from: date | None
    date_to: date | None
    days: int | None
    expires_at: datetime


class InvalidTokenError(Exception):
    """Malformed, tampered with, signed with another key, or expired."""


def sign(claims: LinkClaims, key: SecretStr) -> str:
    payload = {
        "l": claims.link_id.hex,
        "o": claims.org_id.hex,
        "f": claims.date_from.isoformat() if claims.date_from else None,
        "t": claims.date_to.isoformat() if claims.date_to else None,
        "d": claims.days,
        "e": int(claims.expires_at.timestamp()),
    }
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{_b64(_mac(body, key))}"


def verify(token: str, key: SecretStr, now: datetime) -> LinkClaims:
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise InvalidTokenError("not a report token")
    body, signature = token.split(".")
    try:
        given = _unb64(signature)
    except ValueError as exc:
        raise InvalidTokenError("not a report token") from exc
    if not hmac.compare_digest(given, _mac(body, key)):
        raise InvalidTokenError("bad signature")
    try:
        payload = json.loads(_unb64(body))
        claims = LinkClaims(
            link_id=uuid.UUID(hex=payload["l"]),
            org_id=uuid.UUID(hex=payload["o"]),
            date_from=date.fromisoformat(payload["f"]) if payload["f"] else None,
            date_to=date.fromisoformat(payload["t"]) if payload["t"] else None,
            days=int(payload["d"]) if payload["d"] is not None else None,
            expires_at=datetime.fromtimestamp(int(payload["e"]), UTC),
        )
    except (ValueError, KeyError, TypeError) as exc:
        # Signed by us, so this is a format from another version, never a forgery.
        raise InvalidTokenError("unreadable payload") from exc
    if claims.expires_at <= now:
        raise InvalidTokenError("expired")
    return claims


def _mac(body: str, key: SecretStr) -> bytes:
    return hmac.new(
        key.get_secret_value().encode(), _PURPOSE + body.encode(), hashlib.sha256
    ).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text or any(c not in _ALPHABET for c in text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
