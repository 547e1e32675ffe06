"""One line per event; JSON when LOG_JSON=true. Context ids ride along via contextvars."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from app.scrub import scrub_secrets
from app.settings import Settings

_CONTEXT: ContextVar[dict[str, str]] = ContextVar("log_context", default={})  # noqa: B039 - never mutated
_RESERVED = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


@contextlib.contextmanager
def log_context(**ids: object) -> Iterator[None]:
    """Attach ids (org_id, batch_id, message_id, …) to every log line written inside."""
    merged = {**_CONTEXT.get(), **{k: str(v) for k, v in ids.items() if v is not None}}
    token = _CONTEXT.set(merged)
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = dict(_CONTEXT.get())
    fields.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        extras = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{ts} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line = f"{line} [{extras}]"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


class SecretScrubber(logging.Filter):
    """No credential reaches a log line: the message and every string field are scrubbed."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self._settings = settings

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub_secrets(record.getMessage(), self._settings)
        record.args = None
        for key, value in vars(record).items():
            if key not in _RESERVED and isinstance(value, str):
                setattr(record, key, scrub_secrets(value, self._settings))
        return True


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_json else TextFormatter())
    handler.addFilter(SecretScrubber(settings))
    # The access log is one JSON line per request whatever LOG_JSON says: it is read by tools.
    access = logging.StreamHandler(sys.stderr)
    access.setFormatter(JsonFormatter())
    access.addFilter(SecretScrubber(settings))
    access_logger = logging.getLogger("senso.access")
    access_logger.handlers[:] = [access]
    access_logger.propagate = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # Library chatter at INFO drowns the events that matter; httpx's would also log every
    # webhook URL in full, and some carry a token in their path or query.
    for noisy in (
        "httpx",
        "botocore",
        "boto3",
        "urllib3",
        "uvicorn.access",
        "aiosqlite",
        "asyncio",
        "werkzeug",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
