from __future__ import annotations

import uuid
from collections import Counter
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.db.models import BatchStatus, RunStatus, StepStatus
from app.errors import DomainError
from app.schemas import Label, MoneyOut, RequestModel, ShortLabel


class EvaluationTrigger(RequestModel):
    triggered_by: ShortLabel = "api"
    user_id: Label | None = None


MAX_BULK_ORGS = 1000
# What a trigger did with an org: `created` and `resumed` send a job.
Outcome = Literal["created", "existing", "resumed", "skipped"]


class BulkEvaluationTrigger(RequestModel):
    org_ids: list[uuid.UUID] = Field(
        min_length=1, max_length=MAX_BULK_ORGS, description="The orgs to evaluate today, each once"
    )
    triggered_by: ShortLabel = "api"
    user_id: Label | None = None

    @field_validator("org_ids")
    @classmethod
    def _unique(cls, org_ids: list[uuid.UUID]) -> list[uuid.UUID]:
        if len(set(org_ids)) != len(org_ids):
            repeated = sorted({str(o) for o in org_ids if org_ids.count(o) > 1})
            raise ValueError(f"each org once: repeated {', '.join(repeated)}")
        return org_ids

    def trigger(self) -> EvaluationTrigger:
        """What each batch records and audits, as one org's trigger would."""
        return EvaluationTrigger(triggered_by=self.triggered_by, user_id=self.user_id)


class BulkItemError(BaseModel):
    code: str
    message: str

    @classmethod
    def of(cls, error: DomainError) -> BulkItemError:
        return cls(code=error.code, message=error.message)


class BulkItem(BaseModel):
    org_id: uuid.UUID
    outcome: Outcome = Field(
        description="`created` and `resumed` send a job; `skipped` says why in `error`"
    )
    batch_id: uuid.UUID | None = None
    status: BatchStatus | None = None
    total_runs: int | None = None
    error: BulkItemError | None = Field(
        default=None,
        description="Why the org was skipped: `not_found`, `org_inactive`, `empty_matrix`, "
        "`batch_too_large`, `insufficient_balance`",
    )


class BulkCounts(BaseModel):
    created: int
    existing: int
    resumed: int
    skipped: int


class BulkAccepted(BaseModel):
    items: list[BulkItem] = Field(description="One per org, in the order asked")
    counts: BulkCounts

    @classmethod
    def of(cls, items: list[BulkItem]) -> BulkAccepted:
        counts = Counter(item.outcome for item in items)
        return cls(
            items=items,
            counts=BulkCounts(
                created=counts["created"],
                existing=counts["existing"],
                resumed=counts["resumed"],
                skipped=counts["skipped"],
            ),
        )


class EvaluationAccepted(BaseModel):
    batch_id: uuid.UUID
    status: BatchStatus
    is_existing: bool
    total_runs: int


class StepRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    status: StepStatus
    attempts: int
    started_at: datetime
    finished_at: datetime | None
    error: str | None


class BatchRead(BaseModel):
    batch_id: uuid.UUID
    org_id: uuid.UUID
    batch_date: date
    status: BatchStatus
    total_runs: int = Field(description="Runs created so far (adaptive asks add to it)")
    cells: int = Field(description="(question, engine, country) cells of the matrix")
    samples: int = Field(description="Asks of each cell")
    max_samples: int | None = Field(
        description="With adaptive sampling: the most asks a cell whose answers disagree gets"
    )
    max_runs: int = Field(description="The most runs the batch may reach: what was reserved")
    completed_runs: int
    failed_runs: int
    cancelled_runs: int = Field(description="Runs never asked: the batch was cancelled first")
    charged_runs: int
    cost: MoneyOut = Field(
        description="What the engines and the answer analysis cost us for this batch's runs"
    )
    charged_amount: MoneyOut = Field(description="What the partner was charged for this batch")
    price_per_run: MoneyOut = Field(description="The partner's price when the batch was admitted")
    reserved: MoneyOut = Field(
        description="What the batch still holds of the partner's balance for runs not charged "
        "yet; 0 once it has ended"
    )
    job_failures: int = Field(
        description="Failed attempts of the batch's job so far (JOB_MAX_ATTEMPTS allowed)"
    )
    cancel_requested_at: datetime | None = Field(
        description="When a cancel was asked for; the batch ends `cancelled` once no run is "
        "in flight"
    )
    simulated: bool = Field(description="True when any answer came from the simulated engine")
    triggered_by: str
    user_id: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    error: str | None = Field(
        description="Why the batch failed or was cancelled: `code: message`, one line"
    )
    steps: list[StepRead]


class MentionRead(BaseModel):
    mentioned: bool
    mention_count: int
    first_position: int | None
    list_position: int | None
    sentiment: str | None = Field(description="positive, neutral or negative; null unless judged")
    negated: bool = Field(
        description="Named only to say nothing is known about it: not counted as visible"
    )
    snippet: str | None
    org_cited: bool


class CompetitorRead(BaseModel):
    name: str
    mention_count: int
    list_position: int | None
    source: str = Field(
        description="tracked: a configured competitor found by matching; analysis: named by "
        "the answer analysis"
    )


class CitationRead(BaseModel):
    rank: int
    url: str
    domain: str | None
    title: str | None
    source: str
    is_org_domain: bool


class RunRead(BaseModel):
    run_id: uuid.UUID
    question: str
    engine: str
    location: str
    sample: int = Field(description="Which ask of its cell this run is (1-based)")
    status: RunStatus
    simulated: bool
    answer: str | None
    model: str | None
    surface: str | None = Field(description="api, scraped_ui or serp")
    searched: bool | None = Field(
        description="Whether the engine searched the web; null when the provider does not say"
    )
    search_queries: list[str] | None
    surface_present: bool = Field(
        description="False for a results page that showed no AI surface (no AI Overview)"
    )
    extraction_version: int | None
    attempts: int
    latency_ms: int | None
    cost: MoneyOut | None
    error: str | None
    completed_at: datetime | None
    mention: MentionRead | None
    competitors: list[CompetitorRead]
    citations: list[CitationRead]


class RankedName(BaseModel):
    name: str
    runs: int = Field(description="Completed runs whose answer names it")


class EstimateRead(BaseModel):
    """A metric over cells: the mean of each (question, engine, country) cell's mean."""

    value: float | None
    interval: tuple[float, float] | None = Field(
        description="95% interval [low, high]: percentile bootstrap over questions"
    )
    interval_note: str | None = Field(description="Why there is no interval, when there is none")
    cells: int = Field(description="Cells with at least one answer that defines the metric")
    answers: int = Field(description="Answers behind the value")
    questions: int


class ShareOfVoiceEstimate(EstimateRead):
    denominator: str = Field(description="What the org's mentions are compared against")


class ShareOfVoiceRead(BaseModel):
    tracked: ShareOfVoiceEstimate = Field(
        description="Against the org's configured competitors; null when it has none"
    )
    all: ShareOfVoiceEstimate = Field(description="Against every brand the answers named")


class SentimentRead(BaseModel):
    positive: int
    neutral: int
    negative: int
    score: EstimateRead = Field(
        description="Per answer mentioning the org: positive 1, neutral 0, negative −1"
    )


class SummaryRead(BaseModel):
    completed_runs: int
    failed_runs: int = Field(description="Runs that failed, rejected answers included")
    rejected_runs: int = Field(description="Answers the answer guard refused")
    visibility: EstimateRead = Field(
        description="Share of answers mentioning the org (negated mentions excluded)"
    )
    share_of_voice: ShareOfVoiceRead
    average_position: EstimateRead = Field(
        description="Mean rank when the org is listed (negated mentions excluded)"
    )
    citation_rate: EstimateRead = Field(
        description="Share of answers with citations that cite the org's domains"
    )
    citation_rate_searched: EstimateRead = Field(
        description="Share of answers that searched the web and cite the org's domains"
    )
    searched_share: EstimateRead = Field(
        description="Share of answers whose engine says it searched the web"
    )
    ai_overview_presence: EstimateRead = Field(
        description="Share of results pages (serp surface) that showed an AI Overview"
    )
    sentiment: SentimentRead = Field(description="Tone of the answers mentioning the org")
    top_competitors: list[RankedName]
    top_cited_domains: list[RankedName]


class EngineModels(BaseModel):
    engine: str
    models: list[str] = Field(description="The models the engine reported answering with")


class SamplesPerCell(BaseModel):
    min: int
    mean: float
    max: int


class AnswerCounts(BaseModel):
    completed: int
    failed: int
    rejected: int


class MethodologyRead(BaseModel):
    questions: int
    engines: list[EngineModels]
    countries: list[str]
    samples_per_cell: SamplesPerCell | None = Field(description="Asks of each cell")
    answers: AnswerCounts
    llm_analysis: bool = Field(description="Whether the LLM answer analysis judged answers")
    interval_method: str
    extraction_version: int | None = Field(
        description="The extraction rules' version the facts were scored with (the oldest, "
        "when batches scored with different versions are pooled)"
    )
    extraction_versions: list[int]


class BatchSummary(BaseModel):
    """What a batch adds up to: stored when it completes, recomputed on re-scoring."""

    simulated: bool
    summary: SummaryRead
    by_engine: dict[str, SummaryRead]
    by_location: dict[str, SummaryRead]
    methodology: MethodologyRead


class ResultsRead(BatchSummary):
    batch_id: uuid.UUID
    status: BatchStatus
    summarised_at: datetime | None = Field(
        description="When the stored summary was computed; null while the batch is live "
        "(the summary is then computed on each read)"
    )
    runs: list[RunRead]
    total: int
    limit: int
    offset: int
    next_cursor: str | None = Field(
        default=None,
        description="Pass as `cursor` for the next page (keyset: as fast however deep); "
        "null on the last page",
    )


class BatchListItem(BaseModel):
    batch_id: uuid.UUID
    batch_date: date
    status: BatchStatus
    total_runs: int
    triggered_by: str
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    error: str | None


class Period(BaseModel):
    start: date
    end: date


class TrendPoint(EstimateRead):
    period: Period


class TrendRead(BaseModel):
    org_id: uuid.UUID
    metric: str
    granularity: str
    engine: str | None
    location: str | None
    start: date
    end: date
    points: list[TrendPoint] = Field(
        description="One per period in range; value null where no completed batch measured it"
    )
    methodology: MethodologyRead


class ChangeRead(BaseModel):
    current: float | None = Field(description="The metric over the last window")
    previous: float | None = Field(description="The metric over the window before")
    difference: float | None = Field(description="current − previous")
    interval: tuple[float, float] | None = Field(
        description="95% interval of the difference (bootstrap over questions)"
    )
    interval_note: str | None
    verdict: str = Field(
        description="up / down only when the interval, adjusted for every comparison reported "
        "(Bonferroni), excludes 0; otherwise within_noise"
    )
    current_cells: int
    previous_cells: int


class MetricChanges(BaseModel):
    overall: ChangeRead
    by_engine: dict[str, ChangeRead]
    by_location: dict[str, ChangeRead]


class ChangesRead(BaseModel):
    org_id: uuid.UUID
    window: int = Field(description="Days in each window")
    current: Period
    previous: Period
    comparisons: int = Field(description="Comparisons reported: the Bonferroni family")
    method: str
    metrics: dict[str, MetricChanges]


class RescoreCreate(RequestModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    date_from: date = Field(alias="from")
    date_to: date = Field(alias="to")


class RescoreRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    org_id: uuid.UUID
    date_from: date = Field(serialization_alias="from")
    date_to: date = Field(serialization_alias="to")
    status: str
    requested_by: str
    batches: int = Field(description="Batches re-scored so far")
    runs: int = Field(description="Answers re-scored so far")
    error: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
