"""The offline analyst: rule-made variations and rule-based answer reading, free and instant."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from app.analysis.base import AnswerAnalysis, VariationResult
from app.analysis.reading import read_answer
from app.analysis.spellings import rule_variations
from app.offload import read_off_loop

SIMULATED_SOURCE = "simulated"


class SimulatedAnalyst:
    @property
    def source(self) -> str:
        return SIMULATED_SOURCE

    async def name_variations(self, name: str, aliases: Sequence[str]) -> VariationResult:
        return VariationResult(
            names=rule_variations(name, aliases),
            source=SIMULATED_SOURCE,
            model=SIMULATED_SOURCE,
            input_tokens=0,
            output_tokens=0,
            cost=Decimal(0),
        )

    async def analyse_answer(
        self,
        question: str,
        answer: str,
        org_name: str,
        variations: Sequence[str],
        tracked_competitors: Sequence[str],
    ) -> AnswerAnalysis:
        reading = await read_off_loop(
            answer, read_answer, answer, (org_name, *variations), tracked_competitors
        )
        return AnswerAnalysis(
            competitors=reading.competitors,
            sentiment=reading.sentiment,
            negated=reading.negated,
            model=SIMULATED_SOURCE,
            input_tokens=0,
            output_tokens=0,
            cost=Decimal(0),
        )

    async def aclose(self) -> None:
        """Nothing to release: the rules hold no connections."""
