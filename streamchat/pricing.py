"""What tokens cost: the one pricing function (prices in USD per million tokens, as admins enter
them and as ``ChatModel`` stores them)."""

from __future__ import annotations

from decimal import Decimal

MILLION = Decimal(1_000_000)


def cost(
    prompt_tokens: int,
    completion_tokens: int,
    prompt_price: Decimal | None,
    completion_price: Decimal | None,
) -> Decimal | None:
    """The cost in USD of ``prompt_tokens`` in and ``completion_tokens`` out, or None when either
    price is unknown."""
    if prompt_price is None or completion_price is None:
        return None
    return (
        Decimal(prompt_price) * prompt_tokens + Decimal(completion_price) * completion_tokens
    ) / MILLION
