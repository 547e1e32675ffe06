"""The one interface every AI engine implements, real or simulated."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Literal, Protocol, TypeVar

# Where an answer comes from: a provider's API, an assistant's web page as a browser sees it
# (scraped), or a search results page (SERP).
Surface = Literal["api", "scraped_ui", "serp"]


@dataclass(frozen=True, slots=True)
class BrandContext:
    """What the org under evaluation looks like.

    Only the simulated engine reads it (to write answers that name the org); real engines are
    asked the bare question so the answer is not biased by our own framing.
    """

    name: str
    aliases: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    competitors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EngineRequest:
    question: str
    location: str  # ISO 3166-1 alpha-2, upper case
    brand: BrandContext
    attempt: int = 1
    sample: int = 1  # which ask of its cell: repeated asks of one question may differ


@dataclass(frozen=True, slots=True)
class EngineCitation:
    url: str
    title: str | None = None


@dataclass(frozen=True, slots=True)
class EngineAnswer:
    text: str
    citations: tuple[EngineCitation, ...]
    model: str
    input_tokens: int
    output_tokens: int
    cost: Decimal
    latency_ms: int
    simulated: bool
    surface: Surface
    # Whether the engine searched the web for this answer, by the provider's own signal (a web
    # search call, `web_search_triggered`, grounding queries); None when it does not say. An
    # answer that did not search cannot cite, and must not be counted as one that chose not to.
    searched: bool | None
    search_queries: tuple[str, ...] = ()
    # False when the surface was not there at all: a Google results page without an AI
    # Overview. Such an answer is empty, and counts as a completed run without a mention.
    surface_present: bool = True
    raw: dict[str, object] = field(default_factory=dict)


NUL = "\x00"
_Value = TypeVar("_Value")


def without_nul(value: _Value) -> _Value:
    """`value` with NUL dropped from every string in it (through lists, tuples and dicts):
    Postgres text and JSON cannot hold NUL, and a scraped page or a provider's error may
    still carry one."""
    dropped: object = value
    if isinstance(value, str):
        dropped = value.replace(NUL, "") if NUL in value else value
    elif isinstance(value, dict):
        dropped = {without_nul(key): without_nul(item) for key, item in value.items()}
    elif isinstance(value, list | tuple):
        dropped = type(value)(without_nul(item) for item in value)
    return dropped  # type: ignore[return-value]  # the same type as `value`, rebuilt


def storable(answer: EngineAnswer) -> EngineAnswer:
    """The answer as the database can hold it (`without_nul`). Dropped before extraction, so an
    offset found in the text is an offset in the stored text."""
    return replace(
        answer,
        text=without_nul(answer.text),
        model=without_nul(answer.model),
        citations=tuple(
            EngineCitation(without_nul(c.url), without_nul(c.title)) for c in answer.citations
        ),
        search_queries=without_nul(answer.search_queries),
        raw=without_nul(answer.raw),
    )


class EngineError(Exception):
    """An engine call failed; `retryable` says whether asking again may succeed."""

    def __init__(self, reason: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after


class Engine(Protocol):
    engine_id: str
    # How many asks one provider call can serve (a BrightData trigger takes up to 20 inputs);
    # the pipeline keeps that many in flight so calls go out full.
    batch_size: int

    async def ask(self, request: EngineRequest) -> EngineAnswer: ...

    async def aclose(self) -> None: ...
