"""Field types shared by request and response schemas."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import Field, PlainSerializer

from app.db.types import MONEY_PLACES

# Money travels as a decimal string ("12.500000") so no client parses it into a float.
MoneyIn = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=6)]
MoneyOut = Annotated[
    Decimal, PlainSerializer(lambda v: str(v.quantize(MONEY_PLACES)), return_type=str)
]
PositiveMoney = Annotated[Decimal, Field(gt=0, max_digits=18, decimal_places=6)]
