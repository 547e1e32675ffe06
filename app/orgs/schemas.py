from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from app.schemas import Country, EngineId, Name, RequestModel, Text

_HOSTNAME = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def _domain(value: str) -> str:
    """Accept what people paste (`https://www.acme.com/about`) and keep the host."""
    host = re.sub(r"^[a-z][a-z0-9+.-]*://", "", value.strip().lower())
    host = host.split("/", 1)[0].split("?", 1)[0].split(":", 1)[0].rstrip(".")
    if not _HOSTNAME.match(host):
        raise ValueError(f"'{value}' is not a domain name like 'acme.com'")
    return host


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


Domain = Annotated[str, Field(max_length=300), AfterValidator(_domain)]
Names = Annotated[list[Name], Field(max_length=100), AfterValidator(_unique)]
Domains = Annotated[list[Domain], Field(max_length=100), AfterValidator(_unique)]
MAX_SAMPLES = 10
Samples = Annotated[
    int,
    Field(
        ge=1,
        le=MAX_SAMPLES,
        description="Asks of each (question, engine, country) cell per batch",
    ),
]
MaxSamples = Annotated[
    int,
    Field(
        ge=1,
        le=MAX_SAMPLES,
        description="When set, a cell whose answers disagree (some mention the org, some do "
        "not) gets further asks, one at a time, up to this many",
    ),
]


def _check_samples(samples: int | None, max_samples: int | None) -> None:
    if samples is not None and max_samples is not None and max_samples < samples:
        raise ValueError(f"max_samples ({max_samples}) must be at least samples ({samples})")


class OrgCreate(RequestModel):
    partner_id: uuid.UUID | None = Field(
        default=None, description="Required with the operator token; a partner key implies it"
    )
    name: Name
    aliases: Names = Field(default_factory=list)
    domains: Domains = Field(default_factory=list)
    competitors: Names = Field(
        default_factory=list, description="Tracked competitor brands, matched in every answer"
    )
    active: bool = True
    samples: Samples = 1
    max_samples: MaxSamples | None = None

    @model_validator(mode="after")
    def _samples_fit(self) -> OrgCreate:
        _check_samples(self.samples, self.max_samples)
        return self


class OrgUpdate(RequestModel):
    name: Name | None = None
    aliases: Names | None = None
    domains: Domains | None = None
    competitors: Names | None = None
    active: bool | None = None
    samples: Samples | None = None
    max_samples: MaxSamples | None = Field(
        default=None, description="null switches adaptive asks off"
    )

    @model_validator(mode="after")
    def _samples_fit(self) -> OrgUpdate:
        _check_samples(self.samples, self.max_samples)
        return self


class OrgRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    partner_id: uuid.UUID
    name: str
    aliases: list[str]
    domains: list[str]
    competitors: list[str]
    active: bool
    samples: int
    max_samples: int | None
    created_at: datetime
    updated_at: datetime


class QuestionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    text: str
    position: int


class OrgDetail(OrgRead):
    questions: list[QuestionRead]
    engines: list[str]
    locations: list[str]


class QuestionsSet(RequestModel):
    questions: Annotated[list[Text], Field(min_length=1, max_length=500), AfterValidator(_unique)]


class EnginesSet(RequestModel):
    engines: Annotated[list[EngineId], Field(min_length=1, max_length=20)]


class LocationsSet(RequestModel):
    locations: Annotated[
        list[Country],
        Field(min_length=1, max_length=250, description="ISO 3166-1 alpha-2 codes"),
        AfterValidator(_unique),
    ]
