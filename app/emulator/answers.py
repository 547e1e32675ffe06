"""What the emulated assistants say: a scripted answer when one matches, else a generated one.

Generated answers come from the simulated engine, writing about the configured brand, so they
have the lists, links and citations real answers have and are the same for the same question.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.emulator.config import EmulatorConfig
from app.engines.base import BrandContext, EngineRequest
from app.engines.simulated import ENGINE_IDS, SimulatedEngine

_CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class ComposedAnswer:
    text: str
    citations: tuple[tuple[str, str | None], ...]  # (url, title)


async def compose_answer(
    config: EmulatorConfig, question: str, location: str, engine_id: str
) -> ComposedAnswer:
    lowered = question.casefold()
    for scripted in config.answers:
        if scripted.engines is not None and engine_id not in scripted.engines:
            continue
        if scripted.match.casefold() in lowered:
            return ComposedAnswer(
                scripted.text, tuple((c.url, c.title) for c in scripted.citations)
            )
    brand = config.brand
    engine = SimulatedEngine(
        engine_id if engine_id in ENGINE_IDS else "openai", latency_ms=0, failure_rate=0
    )
    answer = await engine.ask(
        EngineRequest(
            question=question,
            location=(location or "US").upper(),
            brand=BrandContext(
                name=brand.name,
                aliases=tuple(brand.aliases),
                domains=tuple(brand.domains),
                competitors=tuple(brand.competitors),
            ),
        )
    )
    return ComposedAnswer(answer.text, tuple((c.url, c.title) for c in answer.citations))


def count_tokens(text: str) -> int:
    return max(1, len(text) // _CHARS_PER_TOKEN)
