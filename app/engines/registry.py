"""Engine ids an org can select, and the client serving each, built once per process.

ENGINE_MODE decides who answers: `real` serves only engines whose credentials are set, `auto`
(the default) serves the others with the simulated engine, whose answers are labelled simulated
in every result, and `simulated` never calls a provider.
"""

from __future__ import annotations

from collections.abc import Callable

from app.engines.anthropic import AnthropicEngine
from app.engines.base import Engine
from app.engines.brightdata import BrightDataEngine
from app.engines.linkup import LinkupEngine
from app.engines.ratelimit import RateLimiter
from app.engines.simulated import ENGINE_IDS, SimulatedEngine
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


# engine id → (what must be set, how to build its client)
_REAL_ENGINES: dict[str, tuple[str, Callable[[Settings], bool], RealEngineFactory]] = {
    "openai": ("OPENAI_API_KEY", lambda s: s.openai_api_key is not None, _openai),
    "azure_openai": (
        "AZURE_OPENAI_API_KEY and AZURE_OPENAI_ENDPOINT",
        lambda s: s.azure_openai_api_key is not None and bool(s.azure_openai_endpoint),
        _azure_openai,
    ),
    "anthropic": ("ANTHROPIC_API_KEY", lambda s: s.anthropic_api_key is not None, AnthropicEngine),
    "brightdata_chatgpt": (
        "BRIGHTDATA_API_KEY",
        lambda s: s.brightdata_api_key is not None,
        lambda s, limiter: BrightDataEngine("brightdata_chatgpt", s, limiter),
    ),
    "brightdata_perplexity": (
        "BRIGHTDATA_API_KEY",
        lambda s: s.brightdata_api_key is not None,
        lambda s, limiter: BrightDataEngine("brightdata_perplexity", s, limiter),
    ),
    "linkup": ("LINKUP_API_KEY", lambda s: s.linkup_api_key is not None, LinkupEngine),
}


class EngineRegistry:
    def __init__(self, settings: Settings, limiter: RateLimiter) -> None:
        self._engines: dict[str, Engine] = {}
        self._missing: dict[str, str] = {}
        for engine_id in ENGINE_IDS:
            needs, configured, factory = _REAL_ENGINES[engine_id]
            if settings.engine_mode != "simulated" and configured(settings):
                self._engines[engine_id] = factory(settings, limiter)
            elif settings.engine_mode == "real":
                self._missing[engine_id] = needs
            else:
                self._engines[engine_id] = SimulatedEngine(
                    engine_id,
                    latency_ms=settings.simulated_latency_ms,
                    failure_rate=settings.simulated_failure_rate,
                )

    @property
    def engine_ids(self) -> tuple[str, ...]:
        return tuple(self._engines)

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

    def _why_not_served(self, engine_id: str) -> str:
        if engine_id in self._missing:
            return f"engine '{engine_id}' is not configured (set {self._missing[engine_id]})"
        return f"unknown engine '{engine_id}'"

    async def aclose(self) -> None:
        for engine in self._engines.values():
            await engine.aclose()
