"""What a provider call cost us, from its token usage and the model's list prices."""

from __future__ import annotations

from decimal import Decimal

COST_QUANTUM = Decimal("0.000001")
_TOKENS_PER_PRICE_UNIT = 1_000_000


def token_cost(
    input_tokens: int,
    output_tokens: int,
    input_price_per_mtok: Decimal,
    output_price_per_mtok: Decimal,
) -> Decimal:
    raw = input_tokens * input_price_per_mtok + output_tokens * output_price_per_mtok
    return (raw / _TOKENS_PER_PRICE_UNIT).quantize(COST_QUANTUM)
