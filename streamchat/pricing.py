"""What tokens cost: the one pricing function (prices in USD per million tokens, as admins enter
them and as ``ChatModel`` stores them)."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, localcontext

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


def usd(amount: Decimal | float | int | str, *, significant: int | None = None) -> str:
    """An amount of USD as every page and message prints it: true at any size.

    The exact amount (to the ledger's 10 decimal places, or two significant digits for a smaller
    one), trailing zeros dropped, at least two decimals: ``$0.00``, ``$0.50``, ``$0.0000123``,
    ``$1,234.5678``. So a sub-cent budget or cost never reads "$0.00". ``significant`` rounds to
    that many significant digits (never below cents) where a short figure reads better, as on a
    chart's axis: ``usd(0.00123456, significant=3)`` is ``$0.00123``.
    """
    try:
        value = Decimal(str(amount))
    except ArithmeticError:
        return "?"
    if not value.is_finite():
        return "?"
    if value == 0:
        return "$0.00"
    exponent = value.adjusted()  # the place of the first significant digit
    places = max(10, 1 - exponent)
    if significant is not None:
        places = min(places, max(2, significant - 1 - exponent))
    with localcontext() as context:
        context.prec = max(28, exponent + places + 2)
        value = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    whole, _, fraction = format(abs(value), ",f").partition(".")
    sign = "-" if value < 0 else ""
    return f"{sign}${whole}.{fraction.rstrip('0').ljust(2, '0')}"
