from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas import MoneyIn, MoneyOut, Name, Note, PositiveMoney, RequestModel


class PartnerCreate(RequestModel):
    name: Name
    balance: MoneyIn = Field(default=Decimal(0))
    price_per_run: MoneyIn | None = Field(
        default=None, description="Charged per successful run; DEFAULT_PRICE_PER_RUN when omitted"
    )


class PartnerRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    balance: MoneyOut = Field(description="Prepaid money left: charged runs have left it")
    reserved: MoneyOut = Field(description="Held for the runs of admitted batches not charged yet")
    available: MoneyOut = Field(
        description="What new batches can be admitted against: balance − reserved"
    )
    price_per_run: MoneyOut
    created_at: datetime
    updated_at: datetime


class TopUp(RequestModel):
    amount: PositiveMoney
    note: Note | None = None
