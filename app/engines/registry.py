"""Engine ids an org can select, and the client serving each, built once per process."""

from __future__ import annotations

from app.engines.base import Engine
from app.engines.simulated import ENGINE_IDS, SimulatedEngine
from app.errors import InvalidInputError
from app.settings import Settings


class EngineRegistry:
    """Every engine id is served by the simulated engine until its real client is configured."""

    def __init__(self, settings: Settings) -> None:
        self._engines: dict[str, Engine] = {
            engine_id: SimulatedEngine(
                engine_id,
                latency_ms=settings.simulated_latency_ms,
                failure_rate=settings.simulated_failure_rate,
            )
            for engine_id in ENGINE_IDS
        }

    @property
    def engine_ids(self) -> tuple[str, ...]:
        return tuple(self._engines)

    def get(self, engine_id: str) -> Engine:
        try:
            return self._engines[engine_id]
        except KeyError:
            raise InvalidInputError(f"unknown engine '{engine_id}'") from None

    def validate(self, engine_ids: list[str]) -> list[str]:
        unknown = sorted(set(engine_ids) - set(self._engines))
        if unknown:
            raise InvalidInputError(
                f"unknown engine(s) {', '.join(unknown)}; known: {', '.join(self._engines)}",
                code="unknown_engine",
            )
        return list(dict.fromkeys(engine_ids))

    async def aclose(self) -> None:
        for engine in self._engines.values():
            await engine.aclose()
