"""Credential scrubbing: provider error text is stored on runs, logged and served to partners,
and providers quote keys in their errors ("Incorrect API key provided: sk-proj-****abcd").

Whatever looks like a credential is replaced before such text leaves the process: key-shaped
tokens (`sk-…`, `sk_…`, `sk-ant-…`), bearer and basic credentials, `api_key=…` pairs, masked
fragments (runs of `*` or `•`), long opaque tokens, and any piece of eight characters or more of
a secret this process is configured with.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import SecretStr

from app.settings import Settings

REDACTED = "[redacted]"
# A shorter piece of a configured secret is too likely to be ordinary text.
MIN_FRAGMENT = 8

_PATTERNS = [
    # Key-shaped tokens, masked or not: sk-proj-****abcd, sk_live_…, sk-ant-api03-…, whsec_…
    re.compile(r"\b(?:sk|pk|rk|whsec)[-_][\w\-*•]{4,}(?:\.[\w\-*•]+)*", re.IGNORECASE),
    # Authorization values: "Bearer abc", "Basic dXNl…", "Token xyz".
    re.compile(r"\b(?:bearer|basic|token)\s+[\w\-.~+/=*•]{4,}", re.IGNORECASE),
    # key=value and "key": "value" pairs naming a credential.
    re.compile(
        r"""((?:api[-_ ]?key|access[-_ ]?token|secret|password|authorization|x-api-key)"""
        r"""["']?\s*[:=]\s*["']?)(?=[^\s"',;&]*[\d\-_])[^\s"',;&]{4,}""",
        re.IGNORECASE,
    ),
    # Masked fragments: anything around a run of mask characters.
    re.compile(r"[\w\-]*[*•]{3,}[\w\-]*"),
    # Long opaque tokens (32+ characters mixing letters and digits); a UUID is no secret.
    re.compile(
        r"\b(?![0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b)"
        r"(?=[\w\-]*\d)(?=[\w\-]*[A-Za-z])[\w\-]{32,}",
        re.IGNORECASE,
    ),
]
_REPEATED = re.compile(r"(?:\[redacted\]){2,}")


def configured_secrets(settings: Settings) -> list[str]:
    """Every secret setting's value (keys, the operator token, passwords in URLs)."""
    values: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            values.append(value.get_secret_value())
    return [value for value in values if len(value) >= MIN_FRAGMENT]


def scrub_secrets(text: str, settings: Settings | None = None) -> str:
    """`text` with every credential-looking piece replaced by [redacted]."""
    if not text:
        return text
    if settings is not None:
        text = _scrub_fragments(text, configured_secrets(settings))
    for pattern in _PATTERNS:
        text = pattern.sub(_replacement, text)
    return _REPEATED.sub(REDACTED, text)


def _replacement(match: re.Match[str]) -> str:
    # A key=value pair keeps its name, so the reader still knows what was there.
    prefix = match.group(1) if match.re.groups else ""
    return f"{prefix}{REDACTED}"


def _scrub_fragments(text: str, secrets: Iterable[str]) -> str:
    """Replace every run of text made of a configured secret's pieces (MIN_FRAGMENT or more)."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
        windows = {secret[i : i + MIN_FRAGMENT] for i in range(len(secret) - MIN_FRAGMENT + 1)}
        spans: list[tuple[int, int]] = []
        start = 0
        while start <= len(text) - MIN_FRAGMENT:
            if text[start : start + MIN_FRAGMENT] in windows:
                end = start + MIN_FRAGMENT
                while end < len(text) and text[start : end + 1] in secret:
                    end += 1
                spans.append((start, end))
                start = end
            else:
                start += 1
        for begin, end in reversed(spans):
            text = text[:begin] + REDACTED + text[end:]
    return text
