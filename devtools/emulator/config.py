"""What the engine emulator does: latency, rate limits, faults and scripted answers.

Set at start (`senso emulator --config FILE`) and replaced at run time with
`PUT /_emulator/config`, so a test can change behaviour without restarting the server.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, Field

Provider = Literal[
    "openai",
    "azure_openai",
    "anthropic",
    "brightdata",
    "linkup",
    "gemini",
    "perplexity",
    "dataforseo",
]
PROVIDERS: tuple[Provider, ...] = get_args(Provider)

FaultKind = Literal[
    "server_error",  # 500
    "overloaded",  # 529 (Anthropic's overloaded_error; others answer 503)
    "rate_limited",  # 429 with Retry-After, whatever the key's budget
    "quota_exhausted",  # the provider's out-of-credit error, never worth retrying
    "key_rejected",  # 401 quoting a masked piece of the key, as OpenAI's "Incorrect API key"
    "stall",  # answer only after `stall_seconds`, so the client times out
    "auth_wall",  # BrightData record whose answer is a log-in wall
    "not_ready",  # BrightData record whose answer is a "still generating" placeholder
    "record_error",  # BrightData record with error / error_code instead of an answer
    "snapshot_failed",  # BrightData snapshot whose progress ends in `failed`
    "daily_quota",  # Gemini's 429 RESOURCE_EXHAUSTED for a spent per-day quota
    "redirect_expired",  # Gemini grounding chunk whose redirect link no longer resolves
    "response_failed",  # Perplexity HTTP 200 whose response has `status: "failed"`
    "no_ai_overview",  # DataForSEO results page without an AI Overview
]


class Fault(BaseModel):
    """Inject `kind` into requests of `provider` (any when None): the next `times` of them,
    or each with probability `rate` when `times` is None."""

    kind: FaultKind
    provider: Provider | None = None
    times: int | None = Field(default=None, ge=1)
    rate: float = Field(default=1.0, ge=0, le=1)
    retry_after_seconds: float = Field(default=1.0, ge=0)
    stall_seconds: float = Field(default=30.0, ge=0)


class RateLimitRule(BaseModel):
    """A token bucket per API key: `burst` requests at once, refilled at rpm/60 a second."""

    requests_per_minute: int = Field(ge=1)
    burst: int = Field(default=2, ge=1)


class ScriptedCitation(BaseModel):
    url: str
    title: str | None = None


class ScriptedAnswer(BaseModel):
    """Answer any question containing `match` (case-insensitive) with `text`, on the listed
    engines (ids of app.engines.catalogue, e.g. `openai`, `brightdata_grok`, `gemini`) or on
    all of them."""

    match: str
    text: str
    citations: list[ScriptedCitation] = Field(default_factory=list)
    engines: list[str] | None = None


class Brand(BaseModel):
    """The org generated answers write about (they name it in about three answers of four)."""

    name: str = "Acme Analytics"
    aliases: list[str] = Field(default_factory=list)
    domains: list[str] = Field(default_factory=lambda: ["acme-analytics.com"])
    competitors: list[str] = Field(default_factory=list)


class EmulatorConfig(BaseModel):
    latency_ms: int = Field(default=0, ge=0)
    latency_jitter_ms: int = Field(default=0, ge=0)
    rate_limits: dict[Provider, RateLimitRule] = Field(default_factory=dict)
    faults: list[Fault] = Field(default_factory=list)
    answers: list[ScriptedAnswer] = Field(default_factory=list)
    brand: Brand = Field(default_factory=Brand)
    # BrightData snapshots report `running` this long after the trigger before `ready`.
    snapshot_ready_after_seconds: float = Field(default=0.0, ge=0)
    # Every billable request waits, unanswered, until the hold is lifted (`EmulatorState.
    # release()`, or a config without it) or its client goes away (logged as 499): a test
    # keeps engine calls in flight for as long as it needs, and sees which were abandoned.
    hold: bool = False
    seed: int = 0
