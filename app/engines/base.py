"""The one interface every AI engine implements, real or simulated."""

from __future__ import annotations

import re
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
REPLACEMENT = "\ufffd"
# What Postgres text and JSON cannot hold: NUL, and a lone UTF-16 surrogate, which has no UTF-8
# form (JSON's "\ud83d" escape without its pair decodes to one: a scraped page's text cut inside
# an emoji, serialised by a browser, carries it so).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_Value = TypeVar("_Value")
# The width of `question_runs.model`: a provider's (or a scraped page's) model name is cut to it.
MODEL_WIDTH = 100


def _stored_as(match: re.Match[str]) -> str:
    return "" if match.group() == NUL else REPLACEMENT


def storable_value(value: _Value) -> _Value:
    """`value` as the database can hold it, through lists, tuples and dicts: NUL dropped from
    every string, a lone surrogate replaced by U+FFFD (as a UTF-8 decoder replaces what it
    cannot read)."""
    stored: object = value
    if isinstance(value, str):
        stored = _UNSTORABLE.sub(_stored_as, value) if _UNSTORABLE.search(value) else value
    elif isinstance(value, dict):
        stored = {storable_value(key): storable_value(item) for key, item in value.items()}
    elif isinstance(value, list | tuple):
        stored = type(value)(storable_value(item) for item in value)
    return stored  # type: ignore[return-value]  # the same type as `value`, rebuilt


def storable(answer: EngineAnswer) -> EngineAnswer:
    """The answer as the database can hold it (`storable_value`, the model's name cut to its
    column). Made so before extraction, so an offset found in the text is an offset in the
    stored text."""
    return replace(
        answer,
        text=storable_value(answer.text),
        model=storable_value(answer.model)[:MODEL_WIDTH],
        citations=tuple(
            EngineCitation(storable_value(c.url), storable_value(c.title)) for c in answer.citations
        ),
        search_queries=storable_value(answer.search_queries),
        raw=storable_value(answer.raw),
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
