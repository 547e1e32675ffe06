"""Field types shared by request and response schemas."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, Field, PlainSerializer

from app.db.types import MAX_MONEY, MONEY_PLACES

# Money travels as a decimal string ("12.500000") so no client parses it into a float.
MoneyIn = Annotated[Decimal, Field(ge=0, le=MAX_MONEY, decimal_places=6)]
MoneyOut = Annotated[
    Decimal, PlainSerializer(lambda v: str(v.quantize(MONEY_PLACES)), return_type=str)
]
PositiveMoney = Annotated[Decimal, Field(gt=0, le=MAX_MONEY, decimal_places=6)]


def _collapse_whitespace(value: str) -> str:
    cleaned = " ".join(value.split())
    if not cleaned:
        raise ValueError("must not be blank")
    return cleaned


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_collapse_whitespace)]
Text = Annotated[str, Field(min_length=3, max_length=1000), AfterValidator(_collapse_whitespace)]
