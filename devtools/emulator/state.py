"""The emulator's memory: the request log, each key's token bucket, the faults still due and
the BrightData snapshots taken."""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from devtools.emulator.config import EmulatorConfig, Fault, Provider

if TYPE_CHECKING:
    from devtools.emulator.brightdata import Snapshot

MAX_LOGGED_REQUESTS = 50_000


@dataclass(slots=True)
class LoggedRequest:
    seq: int
    at: float  # Unix time the request arrived
    provider: Provider | None
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    status: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "provider": self.provider,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.body,
            "status": self.status,
        }


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


@dataclass(slots=True)
class _DueFault:
    fault: Fault
    remaining: int | None


@dataclass
class EmulatorState:
    config: EmulatorConfig
    requests: list[LoggedRequest] = field(default_factory=list)
    # BrightData snapshots by id, oldest first; kept across configure(), like the request log.
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    _buckets: dict[tuple[str, str], _Bucket] = field(default_factory=dict)
    _faults: list[_DueFault] = field(default_factory=list)
    _rng: random.Random = field(default_factory=random.Random)
    _holding: bool = False
    _held: int = 0
    # Handlers run on one event loop, but tests read the log from another thread.
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seq: int = 0

    def __post_init__(self) -> None:
        self.configure(self.config)

    def configure(self, config: EmulatorConfig) -> None:
        with self._lock:
            self.config = config
            self._buckets.clear()
            self._faults = [_DueFault(fault, fault.times) for fault in config.faults]
            self._rng = random.Random(config.seed)
            self._holding = config.hold

    def release(self) -> None:
        """Lift the hold: requests held wait no longer, new ones are not held."""
        with self._lock:
            self._holding = False

    @property
    def holding(self) -> bool:
        with self._lock:
            return self._holding

    @property
    def held(self) -> int:
        """Requests waiting for the hold to be lifted right now."""
        with self._lock:
            return self._held

    def hold_one(self, delta: int) -> None:
        with self._lock:
            self._held += delta

    def record(
        self,
        provider: Provider | None,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: Any,
    ) -> LoggedRequest:
        with self._lock:
            self._seq += 1
            entry = LoggedRequest(
                self._seq, time.time(), provider, method, path, query, headers, body
            )
            self.requests.append(entry)
            del self.requests[:-MAX_LOGGED_REQUESTS]
            return entry

    def logged(self, provider: str | None = None) -> list[LoggedRequest]:
        with self._lock:
            return [r for r in self.requests if provider is None or r.provider == provider]

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def retry_after_for(self, provider: Provider, key: str) -> float | None:
        """Take a token from this key's bucket; when it is empty, seconds until one refills."""
        rule = self.config.rate_limits.get(provider)
        if rule is None:
            return None
        rate = rule.requests_per_minute / 60
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.setdefault((provider, key), _Bucket(rule.burst, now))
            bucket.tokens = min(rule.burst, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return None
            return (1 - bucket.tokens) / rate

    def take_fault(self, provider: Provider, kinds: frozenset[str]) -> Fault | None:
        """The first configured fault of one of `kinds` due for this request, if any."""
        with self._lock:
            for due in self._faults:
                fault = due.fault
                if fault.kind not in kinds or fault.provider not in (None, provider):
                    continue
                if due.remaining is not None:
                    if due.remaining == 0:
                        continue
                    due.remaining -= 1
                    return fault
                if self._rng.random() < fault.rate:
                    return fault
            return None

    def latency_seconds(self) -> float:
        config = self.config
        with self._lock:
            jitter = self._rng.uniform(-1, 1) * config.latency_jitter_ms
        return max(0.0, config.latency_ms + jitter) / 1000


def retry_after_header(seconds: float) -> str:
    """Retry-After carries whole seconds; round up so obeying it is always enough."""
    return str(max(1, math.ceil(seconds)))
