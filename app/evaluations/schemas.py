from __future__ import annotations

import uuid
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from app.db.models import BatchStatus, RunStatus, StepStatus
from app.schemas import Label, MoneyOut, RequestModel, ShortLabel


class EvaluationTrigger(RequestModel):
    triggered_by: ShortLabel = "api"
    user_id: Label | None = None


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
    total_runs: int
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
    status: RunStatus
    simulated: bool
    answer: str | None
    model: str | None
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


class SentimentRead(BaseModel):
    positive: int
    neutral: int
    negative: int
    score: float | None = Field(
        description="(positive − negative) ÷ answers with a sentiment, from −1 to 1"
    )


class SummaryRead(BaseModel):
    completed_runs: int
    failed_runs: int
    visibility: float | None = Field(
        description="Share of completed runs mentioning the org (negated mentions excluded)"
    )
    share_of_voice: float | None = Field(
        description="Runs mentioning the org ÷ runs mentioning each tracked brand, summed over "
        "the org and its configured competitors (every competitor named, when none is set)"
    )
    average_list_position: float | None = Field(
        description="Mean rank when the org is listed (negated mentions excluded)"
    )
    citation_rate: float | None = Field(
        description="Share of completed runs with citations that cite its domains"
    )
    sentiment: SentimentRead = Field(description="Tone of the runs mentioning the org")
    top_competitors: list[RankedName]
    top_cited_domains: list[RankedName]


class ResultsRead(BaseModel):
    batch_id: uuid.UUID
    status: BatchStatus
    simulated: bool
    summary: SummaryRead
    by_engine: dict[str, SummaryRead]
    by_location: dict[str, SummaryRead]
    runs: list[RunRead]
    total: int
    limit: int
    offset: int


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
