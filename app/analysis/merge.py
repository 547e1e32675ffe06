"""One run's analysis, merged with its deterministic facts into what is stored.

Matching stays the authority on whether and where a name appears; the analyst adds what needs
judgement: untracked competitors, the tone towards the org, and whether its mention is negated.
A failed analysis is recorded on the run, whose deterministic facts are stored regardless:
the engine's answer was paid for and must not be lost to a failure after it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from app.analysis.base import AnalysisError, Analyst, AnswerAnalysis, Sentiment
from app.analysis.names import name_key
from app.engines.base import BrandContext
from app.extraction import BrandMatch
from app.extraction.document import Document
from app.extraction.matching import match_document

logger = logging.getLogger(__name__)

CompetitorSource = Literal["tracked", "analysis"]


@dataclass(frozen=True, slots=True)
class AnalysisOutcome:
    analysis: AnswerAnalysis | None
    error: str | None = None

    @property
    def cost(self) -> Decimal:
        return self.analysis.cost if self.analysis is not None else Decimal(0)

    def usage_record(self) -> dict[str, object]:
        """What the run's raw_response keeps of the call (JSON: money as a string)."""
        if self.analysis is None:
            return {"error": self.error}
        return {
            "model": self.analysis.model,
            "input_tokens": self.analysis.input_tokens,
            "output_tokens": self.analysis.output_tokens,
            "cost": str(self.analysis.cost),
        }


@dataclass(frozen=True, slots=True)
class NamedCompetitor:
    name: str
    mention_count: int
    list_position: int | None
    first_offset: int | None
    source: CompetitorSource  # tracked: configured and matched; analysis: named by the analyst


def other_names(brand: BrandContext, variations: Sequence[str]) -> tuple[str, ...]:
    """The org's aliases and name variations, each once and never the name: what an analyst
    is told besides the name."""
    return tuple(dict.fromkeys(n for n in (*brand.aliases, *variations) if n != brand.name))


async def analyse(
    analyst: Analyst,
    question: str,
    answer: str,
    brand: BrandContext,
    org_other_names: Sequence[str],
) -> AnalysisOutcome:
    """org_other_names: `other_names(brand, variations)`."""
    try:
        analysis = await analyst.analyse_answer(
            question, answer, brand.name, org_other_names, brand.competitors
        )
    except AnalysisError as exc:
        logger.warning(
            "answer analysis failed; deterministic facts only", extra={"error": str(exc)}
        )
        return AnalysisOutcome(None, str(exc))
    return AnalysisOutcome(analysis)


def judged_mention(
    mentioned: bool, analysis: AnswerAnalysis | None
) -> tuple[Sentiment | None, bool]:
    """(sentiment, negated) of the org's mention; neither means anything without a mention.

    The one place the negation rule is applied, whichever analyst judged: a negated mention
    says nothing about the org, so it has no sentiment.
    """
    if analysis is None or not mentioned:
        return None, False
    return (None if analysis.negated else analysis.sentiment), analysis.negated


def named_competitors(
    document: Document,
    tracked_found: Sequence[tuple[str, BrandMatch]],
    analysis: AnswerAnalysis | None,
) -> list[NamedCompetitor]:
    """Tracked competitors matched in the answer (`document`, as extraction parsed it), then
    those only the analyst named.

    An analyst-named competitor is located by matching when its name appears as written;
    otherwise (a paraphrase, another spelling) it is counted once, at no position.
    """
    named = [
        NamedCompetitor(
            name, found.mention_count, found.list_position, found.first_offset, "tracked"
        )
        for name, found in tracked_found
    ]
    if analysis is None:
        return named
    present = {name_key(competitor.name) for competitor in named}
    for name in analysis.competitors:
        if name_key(name) in present:
            continue
        present.add(name_key(name))
        found = match_document((name,), document)
        if found.mentioned:
            named.append(
                NamedCompetitor(
                    name, found.mention_count, found.list_position, found.first_offset, "analysis"
                )
            )
        else:
            named.append(NamedCompetitor(name, 1, None, None, "analysis"))
    return named
