"""How a provider's failure becomes an EngineError: retry or not, and how long to wait first.

Retried: 408, 409, 429, 5xx (529 included) and timeouts. Not retried: quota or credit exhaustion
(asking again only burns attempts until someone pays), bad keys and bad requests.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from app.engines.base import EngineError

# Error codes the providers use when the account, not the request, is the problem.
QUOTA_CODES = frozenset(
    {
        "insufficient_quota",  # OpenAI, Azure OpenAI
        "billing_hard_limit_reached",  # OpenAI
        "INSUFFICIENT_FUNDS_CREDITS",  # Linkup
        "EXCEED_BUDGET_LIMIT",  # Linkup
    }
)
_QUOTA_PHRASES = (
    "credit balance is too low",
    "exceeded your current quota",
    "insufficient funds",
    "insufficient credits",
)
_RETRYABLE_STATUSES = frozenset({408, 409, 429})
_MAX_MESSAGE = 300


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """`retry-after-ms` first (OpenAI, Azure), then `Retry-After` in seconds or as an HTTP date."""
    lowered = {key.lower(): value for key, value in headers.items()}
    milliseconds = lowered.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def error_code_and_message(body: bytes | str) -> tuple[str | None, str]:
    """The `{"error": {"code"|"type", "message"}}` shape OpenAI, Anthropic and Linkup share."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        document = json.loads(text)
    except ValueError:
        return None, text.strip()[:_MAX_MESSAGE]
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        message = error.get("message") or ""
        return (str(code) if code else None), str(message)[:_MAX_MESSAGE]
    if isinstance(error, str):
        return None, error[:_MAX_MESSAGE]
    if isinstance(document, dict) and isinstance(document.get("message"), str):
        return None, document["message"][:_MAX_MESSAGE]
    return None, text.strip()[:_MAX_MESSAGE]


def error_from_response(
    provider: str, status: int, headers: Mapping[str, str], body: bytes | str
) -> EngineError:
    code, message = error_code_and_message(body)
    detail = f"{provider}: HTTP {status}" + (f" {code}" if code else "") + f": {message}"
    if is_quota_error(status, code, message):
        return EngineError(f"quota_exhausted: {detail}", retryable=False)
    retryable = status in _RETRYABLE_STATUSES or status >= 500
    return EngineError(detail, retryable=retryable, retry_after=retry_after_seconds(headers))


def is_quota_error(status: int, code: str | None, message: str) -> bool:
    if code in QUOTA_CODES or status == 402:
        return True
    # Anthropic reports an empty balance as a 400 invalid_request_error; only the text tells.
    lowered = message.lower()
    return status in (400, 403, 429) and any(phrase in lowered for phrase in _QUOTA_PHRASES)


def timeout_error(provider: str, timeout: float) -> EngineError:
    return EngineError(f"{provider}: no answer within {timeout:g} s", retryable=True)


def connection_error(provider: str, exc: Exception) -> EngineError:
    return EngineError(f"{provider}: connection failed ({type(exc).__name__})", retryable=True)


_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def google_error(
    provider: str, status: int, headers: Mapping[str, str], body: bytes | str
) -> EngineError:
    """Google's `{"error": {"code", "message", "status", "details"}}`: a 429 waits as long as
    its RetryInfo says, and a spent per-day quota (a QuotaFailure whose quotaId names PerDay)
    is quota exhaustion, not worth asking again before tomorrow."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return error_from_response(provider, status, headers, body)
    code = error.get("status")
    message = str(error.get("message") or "")[:_MAX_MESSAGE]
    detail = f"{provider}: HTTP {status}" + (f" {code}" if code else "") + f": {message}"
    details = [d for d in error.get("details") or () if isinstance(d, dict)]
    if any(_daily_quota(d) for d in details) or is_quota_error(status, None, message):
        return EngineError(f"quota_exhausted: {detail}", retryable=False)
    retry_after = next((_delay(d) for d in details if d.get("@type") == _RETRY_INFO), None)
    retryable = status in _RETRYABLE_STATUSES or status >= 500
    return EngineError(
        detail, retryable=retryable, retry_after=retry_after or retry_after_seconds(headers)
    )


def _daily_quota(detail: dict[str, object]) -> bool:
    violations = detail.get("violations") if detail.get("@type") == _QUOTA_FAILURE else None
    return isinstance(violations, list) and any(
        isinstance(v, dict) and "PerDay" in str(v.get("quotaId", "")) for v in violations
    )


def _delay(detail: dict[str, object]) -> float | None:
    match = _DURATION.match(str(detail.get("retryDelay", "")))
    return float(match.group(1)) if match else None
