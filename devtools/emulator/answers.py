"""What the emulated assistants say: a scripted answer when one matches, else a generated one.

Generated answers come from the simulated engine, writing about the configured brand, so they
have the lists, links and citations real answers have and are the same for the same question.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.engines.base import BrandContext, EngineRequest
from app.engines.catalogue import ENGINE_IDS
from app.engines.simulated import SimulatedEngine
from devtools.emulator.config import EmulatorConfig

_CHARS_PER_TOKEN = 4
# Stateless, instant and never failing, so one engine per id serves every request.
_ENGINES = {
    engine_id: SimulatedEngine(engine_id, latency_ms=0, failure_rate=0) for engine_id in ENGINE_IDS
}


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
    answer = await _ENGINES[engine_id].ask(
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


def invalid_messages(messages: Any, *, empty: str, malformed: str) -> str | None:
    """What is wrong with a chat request's `messages`, in the provider's words: `empty` unless
    it is a non-empty list, `malformed` unless each message is an object with a string role."""
    if not isinstance(messages, list) or not messages:
        return empty
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        return malformed
    return None


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The question a chat asks: the text of its last user message (messages already valid)."""
    user_messages = [m for m in messages if m["role"] == "user"]
    return message_text(user_messages[-1].get("content")) if user_messages else ""


def message_text(content: Any) -> str:
    """A message's content: a string, or a list of blocks of which the text ones count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            block["text"]
            for block in content
            if isinstance(block, dict)
            and block.get("type") == "text"
            and isinstance(block.get("text"), str)
        )
    return ""
