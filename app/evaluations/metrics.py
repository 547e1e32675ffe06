"""What one answer says about the org, per metric, and how answers add up to cells and to
estimates with intervals.

Each completed answer gives a value for each metric it defines (an answer that names no brand
says nothing about share of voice); a cell — one (question, engine, country) — is the mean of
its answers' values; an estimate is the mean over cells, with a bootstrap interval over
questions (`app.evaluations.stats`). So a cell asked five times weighs what a cell asked once
does, and failed or rejected answers count in nothing.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from app.analysis.names import name_key
from app.db.models import RunStatus
from app.evaluations import stats


class Metric(StrEnum):
    VISIBILITY = "visibility"
    SHARE_OF_VOICE_TRACKED = "share_of_voice_tracked"
    SHARE_OF_VOICE_ALL = "share_of_voice_all"
    AVERAGE_POSITION = "average_position"
    CITATION_RATE = "citation_rate"
    SENTIMENT_SCORE = "sentiment_score"
    SEARCHED_SHARE = "searched_share"
    CITATION_RATE_SEARCHED = "citation_rate_searched"
    AI_OVERVIEW_PRESENCE = "ai_overview_presence"


# What a trend or a change verdict may follow.
TREND_METRICS = tuple(Metric)
# The metrics whose change after a batch is worth telling a partner (metric.changed).
HEADLINE_METRICS = (
    Metric.VISIBILITY,
    Metric.SHARE_OF_VOICE_TRACKED,
    Metric.SHARE_OF_VOICE_ALL,
    Metric.AVERAGE_POSITION,
    Metric.CITATION_RATE,
    Metric.SENTIMENT_SCORE,
)
SENTIMENT_SCORES = {"positive": 1.0, "neutral": 0.0, "negative": -1.0}
SERP_SURFACE = "serp"
REJECTED_PREFIX = "invalid_answer"

CellKey = tuple[uuid.UUID, str, str]  # question, engine, country


@dataclass(frozen=True, slots=True)
class RunFacts:
    """One run and what was found in its answer."""

    question_id: uuid.UUID
    engine: str
    location: str
    sample: int
    status: RunStatus
    error: str | None
    simulated: bool
    model: str | None
    surface: str | None
    searched: bool | None
    surface_present: bool
    analysed: bool
    extraction_version: int | None
    mentioned: bool
    negated: bool
    list_position: int | None
    org_cited: bool
    sentiment: str | None
    competitors: frozenset[str]
    domains: frozenset[str]
    has_citations: bool

    @property
    def cell(self) -> CellKey:
        return (self.question_id, self.engine, self.location)

    @property
    def visible(self) -> bool:
        """The org is mentioned, and not only to say nothing is known about it."""
        return self.mentioned and not self.negated

    @property
    def rejected(self) -> bool:
        """The engine answered, but the answer guard refused what it said."""
        return self.status == RunStatus.FAILED and (self.error or "").startswith(REJECTED_PREFIX)


@dataclass(frozen=True, slots=True)
class TrackedBrands:
    """The org's configured competitors, by name key; None when it has none (then share of
    voice among tracked brands has nothing to compare against)."""

    keys: frozenset[str] | None

    @classmethod
    def of(cls, configured: Iterable[str]) -> TrackedBrands:
        keys = frozenset(name_key(name) for name in configured)
        return cls(keys or None)


def answer_values(run: RunFacts, tracked: TrackedBrands) -> dict[Metric, float]:
    """The metrics a completed answer defines, with its value for each."""
    values: dict[Metric, float] = {}
    if run.status != RunStatus.COMPLETED:
        return values
    if run.surface == SERP_SURFACE:
        values[Metric.AI_OVERVIEW_PRESENCE] = float(run.surface_present)
    if run.searched is not None:
        values[Metric.SEARCHED_SHARE] = float(run.searched)
    if not run.surface_present:
        # A results page without the AI surface: nothing to measure but its absence.
        return values
    visible = run.visible
    values[Metric.VISIBILITY] = float(visible)
    named = {name_key(name) for name in run.competitors}
    if tracked.keys is not None:
        rivals = len(named & tracked.keys)
        if visible or rivals:
            values[Metric.SHARE_OF_VOICE_TRACKED] = visible / (visible + rivals)
    if visible or named:
        values[Metric.SHARE_OF_VOICE_ALL] = visible / (visible + len(named))
    if visible and run.list_position is not None:
        values[Metric.AVERAGE_POSITION] = float(run.list_position)
    if run.has_citations:
        values[Metric.CITATION_RATE] = float(run.org_cited)
    if run.searched:
        values[Metric.CITATION_RATE_SEARCHED] = float(run.org_cited)
    if visible and run.sentiment in SENTIMENT_SCORES:
        values[Metric.SENTIMENT_SCORE] = SENTIMENT_SCORES[run.sentiment]
    return values


@dataclass(frozen=True, slots=True)
class CellValue:
    value: float
    answers: int


CellValues = dict[CellKey, dict[Metric, CellValue]]


def cell_values(runs: Iterable[RunFacts], tracked: TrackedBrands) -> CellValues:
    """Each cell's value per metric: the mean of its answers that define the metric."""
    sums: defaultdict[CellKey, dict[Metric, list[float]]] = defaultdict(dict)
    for run in runs:
        for metric, value in answer_values(run, tracked).items():
            entry = sums[run.cell].setdefault(metric, [0.0, 0.0])
            entry[0] += value
            entry[1] += 1
    return {
        cell: {m: CellValue(total / count, int(count)) for m, (total, count) in metrics.items()}
        for cell, metrics in sums.items()
    }


def estimate_of(cells: Iterable[tuple[uuid.UUID, CellValue]], seed: int) -> stats.Estimate:
    """(question, cell value) pairs → the mean over cells with its interval."""
    return stats.estimate(
        stats.by_question((question, cell.value, cell.answers) for question, cell in cells),
        seed,
    )


def metric_cells(
    values: Mapping[CellKey, Mapping[Metric, CellValue]], metric: Metric
) -> list[tuple[uuid.UUID, CellValue]]:
    return [(key[0], metrics[metric]) for key, metrics in values.items() if metric in metrics]


def ranked(counter: Counter[str], top: int) -> list[tuple[str, int]]:
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:top]
