"""Field types shared by request and response schemas.

Every string a client sends that reaches the database or a query filter is one of the text
types here: control characters (NUL among them, which Postgres refuses) and lone surrogates
are a 422 naming the field, and so is a string of only invisible characters. Money is a plain
decimal: `-0`, `1_000`, ` 12 ` and exponents are refused rather than read generously.
"""

from __future__ import annotations

import math
import re
import unicodedata
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)

from app.countries import ISO_3166_ALPHA2, normalise_country
from app.db.types import MAX_MONEY, MONEY_PLACES
from app.engines.catalogue import ENGINE_IDS


class RequestModel(BaseModel):
    """A request body: a field the endpoint does not know is a 422 naming it, not ignored."""

    model_config = ConfigDict(extra="forbid")


# Characters that show nothing: format characters (zero-width space, joiners, BOM), and the
# blank letters some scripts have (Hangul fillers, the Braille blank).
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Mn", "Me", "Zs", "Zl", "Zp"})


def _is_invisible(char: str) -> bool:
    return (
        char.isspace()
        or char in _BLANK_LETTERS
        or unicodedata.category(char) in _INVISIBLE_CATEGORIES
    )


def clean_text(value: str) -> str:
    """`value` with its whitespace collapsed; ValueError on control characters, lone
    surrogates, or nothing visible."""
    for char in value:
        category = unicodedata.category(char)
        if category == "Cs":
            raise ValueError("must not contain lone surrogates (invalid Unicode)")
        if category == "Cc" and not char.isspace():
            raise ValueError(f"must not contain control characters (found U+{ord(char):04X})")
    cleaned = " ".join(value.split())
    if not cleaned or all(_is_invisible(char) for char in cleaned):
        raise ValueError("must not be blank or only invisible characters")
    return cleaned


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(clean_text)]
Text = Annotated[str, Field(min_length=3, max_length=1000), AfterValidator(clean_text)]
Note = Annotated[str, Field(min_length=1, max_length=500), AfterValidator(clean_text)]
# Identifiers a client passes along (who triggered a batch, their user id) and query filters.
Label = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(clean_text)]
ShortLabel = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(clean_text)]

# What the document promises; the range and the places are then checked by the field, so a
# negative amount or a seventh decimal gets the precise error.
MONEY_PATTERN = r"^\d{1,12}(?:\.\d{1,6})?$"
_MONEY_TEXT = re.compile(r"^-?\d+(?:\.\d+)?$")


def _plain_money(value: Any) -> Any:
    """A JSON number or a plain decimal string: no separators, spaces, exponent or `-0`."""
    if isinstance(value, bool):
        raise ValueError("must be a decimal amount, not a boolean")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must be a finite amount")
        value = Decimal(repr(value))
    elif isinstance(value, str):
        if not _MONEY_TEXT.match(value):
            raise ValueError("must be a plain decimal like '12.50': digits, an optional point")
        value = Decimal(value)
    if isinstance(value, Decimal) and value.is_zero() and value.is_signed():
        raise ValueError("must not be negative zero")
    return value


def _money(minimum: dict[str, Any]) -> Any:
    schema = {
        "anyOf": [
            # The largest double not above MAX_MONEY once read back as a decimal.
            {"type": "number", **minimum, "maximum": 999_999_999_999.99},
            {"type": "string", "pattern": MONEY_PATTERN},
        ],
        "examples": ["12.50"],
    }
    return WithJsonSchema(schema, mode="validation")


MoneyIn = Annotated[
    Decimal,
    BeforeValidator(_plain_money),
    Field(ge=0, le=MAX_MONEY, decimal_places=6),
    _money({"minimum": 0}),
]
PositiveMoney = Annotated[
    Decimal,
    BeforeValidator(_plain_money),
    Field(gt=0, le=MAX_MONEY, decimal_places=6),
    _money({"exclusiveMinimum": 0}),
]
# Money travels as a decimal string ("12.500000") so no client parses it into a float.
MoneyOut = Annotated[
    Decimal,
    PlainSerializer(lambda v: str(v.quantize(MONEY_PLACES)), return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": r"^-?\d+\.\d{6}$", "examples": ["12.500000"]},
        mode="serialization",
    ),
]


# The document lists the engines there are; the registry refuses (422 `unknown_engine`) those
# this deployment does not serve, naming the ones it does.
EngineId = Annotated[
    str,
    Field(max_length=64),
    AfterValidator(clean_text),
    WithJsonSchema({"type": "string", "enum": list(ENGINE_IDS)}),
]
Country = Annotated[
    str,
    AfterValidator(normalise_country),
    WithJsonSchema(
        {
            "type": "string",
            "enum": sorted(ISO_3166_ALPHA2),
            "description": "ISO 3166-1 alpha-2 code (lower case is accepted too)",
        }
    ),
]
