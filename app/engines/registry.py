"""Engine ids an org can select, and the client serving each, built once per process.

ENABLED_ENGINES (the same in the API and the worker) lists what this deployment serves; any
other engine id is refused for an org. ENGINE_MODE decides who answers an enabled engine:
`real` serves only engines whose credentials are set, `auto` (the default) serves the others
with the simulated engine, whose answers are labelled simulated in every result, and
`simulated` never calls a provider. With `real` and an explicit ENABLED_ENGINES, an enabled
engine without credentials is a configuration error: the process refuses to start, rather
than accept orgs whose runs would all fail.
"""

from __future__ import annotations

from collections.abc import Callable

from app.engines.anthropic import AnthropicEngine
from app.engines.base import Engine
from app.engines.brightdata import BrightDataEngine
from app.engines.catalogue import CATALOGUE, check_engine_settings
from app.engines.gemini import GeminiEngine
from app.engines.linkup import LinkupEngine
from app.engines.perplexity import PerplexityEngine
from app.engines.ratelimit import RateLimiter
from app.engines.scrapers import SCRAPERS
from app.engines.serp import SerpEngine
from app.engines.simulated import SimulatedEngine
from app.errors import InvalidInputError
from app.settings import Settings

RealEngineFactory = Callable[[Settings, RateLimiter], Engine]


def _openai(settings: Settings, limiter: RateLimiter) -> Engine:
    # Imported when built: the openai package is slow to import, and a process serving these
    # engines simulated (or not at all) never needs it.
    from app.engines.openai_chat import OpenAIEngine

    return OpenAIEngine(settings, limiter)


def _azure_openai(settings: Settings, limiter: RateLimiter) -> Engine:
    from app.engines.openai_chat import AzureOpenAIEngine

    return AzureOpenAIEngine(settings, limiter)


def _scraper(engine_id: str) -> RealEngineFactory:
    return lambda settings, limiter: BrightDataEngine(engine_id, settings, limiter)


_FACTORIES: dict[str, RealEngineFactory] = {
    "openai": _openai,
    "azure_openai": _azure_openai,
    "anthropic": AnthropicEngine,
    "linkup": LinkupEngine,
    "gemini": GeminiEngine,
    "perplexity": PerplexityEngine,
    "google_ai_overview": SerpEngine,
    **{engine_id: _scraper(engine_id) for engine_id in SCRAPERS},
}


class EngineRegistry:
    def __init__(self, settings: Settings, limiter: RateLimiter) -> None:
        self._settings = settings
        self._engines: dict[str, Engine] = {}
        self._missing: dict[str, str] = {}
        self._enabled = check_engine_settings(settings)
        for engine_id in self._enabled:
            spec = CATALOGUE[engine_id]
            if settings.engine_mode != "simulated" and spec.configured(settings):
                self._engines[engine_id] = _FACTORIES[engine_id](settings, limiter)
            elif settings.engine_mode == "real":
                self._missing[engine_id] = " and ".join(spec.credentials)
            else:
                self._engines[engine_id] = SimulatedEngine(
                    engine_id,
                    latency_ms=settings.simulated_latency_ms,
                    failure_rate=settings.simulated_failure_rate,
                )

    @property
    def engine_ids(self) -> tuple[str, ...]:
        return tuple(self._engines)

    def serves(self, engine_id: str) -> bool:
        return engine_id in self._engines

    def get(self, engine_id: str) -> Engine:
        try:
            return self._engines[engine_id]
        except KeyError:
            raise InvalidInputError(self._why_not_served(engine_id)) from None

    def validate(self, engine_ids: list[str]) -> list[str]:
        refused = [self._why_not_served(e) for e in sorted(set(engine_ids) - set(self._engines))]
        if refused:
            raise InvalidInputError(
                f"{'; '.join(refused)}; available: {', '.join(self._engines) or 'none'}",
                code="unknown_engine",
            )
        return list(dict.fromkeys(engine_ids))

    def check_countries(self, engine_ids: list[str], countries: list[str]) -> None:
        """Refuse every (engine, country) pair the engine cannot be asked from, naming both,
        when the org's matrix is set rather than when its runs fail."""
        refused = [
            f"engine '{engine_id}' does not serve country '{country}'"
            for engine_id in engine_ids
            if engine_id in CATALOGUE
            for country in countries
            if CATALOGUE[engine_id].refuses(country, self._settings)
        ]
        if refused:
            raise InvalidInputError("; ".join(refused), code="unserved_country")

    def _why_not_served(self, engine_id: str) -> str:
        if engine_id in self._missing:
            return f"engine '{engine_id}' is not configured (set {self._missing[engine_id]})"
        if engine_id in CATALOGUE:
            return f"engine '{engine_id}' is not enabled in this deployment (ENABLED_ENGINES)"
        return f"unknown engine '{engine_id}'"

    async def aclose(self) -> None:
        for engine in self._engines.values():
            await engine.aclose()
