"""``{% load streamchat_money %}``: ``{{ amount|usd }}`` prints USD as ``streamchat.pricing.usd``
does everywhere else (exact, at least two decimals: a sub-cent amount never reads "$0.00")."""

from __future__ import annotations

from decimal import Decimal

from django import template

from .. import pricing

register = template.Library()


@register.filter
def usd(amount: Decimal | float | int | str | None) -> str:
    return "" if amount is None or amount == "" else pricing.usd(amount)
