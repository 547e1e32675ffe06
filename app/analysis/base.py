"""The judgement calls extraction cannot make deterministically, behind one small interface."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, Protocol

Sentiment = Literal["positive", "neutral", "negative"]


@dataclass(frozen=True, slots=True)
class VariationResult:
    names: tuple[str, ...]  # the ways the org's name is written, beyond the name itself
    source: str  # the analyst that made them (`Analyst.source`)
    model: str
    input_tokens: int
    output_tokens: int
    cost: Decimal


@dataclass(frozen=True, slots=True)
class AnswerAnalysis:
    competitors: tuple[str, ...]  # normalised, in order of first appearance, never the org
    # Towards the org; None when the org is not mentioned. An analyst may judge the tone of a
    # negated mention too: merge.judged_mention drops it, the one place that rule is applied.
    sentiment: Sentiment | None
    negated: bool  # the org is named only to say nothing is known about it
    model: str
    input_tokens: int
    output_tokens: int
    cost: Decimal


class AnalysisError(Exception):
    """An analysis could not be made; the deterministic facts stand without it."""


class Analyst(Protocol):
    @property
    def source(self) -> str:
        """Who makes the results (`simulated`, `openai:gpt-4o-mini`): cached names record it."""
        ...

    async def name_variations(self, name: str, aliases: Sequence[str]) -> VariationResult: ...

    async def analyse_answer(
        self,
        question: str,
        answer: str,
        org_name: str,
        variations: Sequence[str],
        tracked_competitors: Sequence[str],
    ) -> AnswerAnalysis: ...

    async def aclose(self) -> None: ...
