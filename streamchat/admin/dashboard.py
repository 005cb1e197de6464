"""The usage dashboard's numbers and its server-rendered SVG bar charts (no JavaScript, no CDN).

Days are calendar days in the current time zone; the window is the last ``DAYS`` days, today
included.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import BigIntegerField, Count, F, Q, QuerySet, Sum
from django.db.models.functions import Cast, Coalesce, Round, TruncDate
from django.utils import timezone

from ..models import Usage
from ..pricing import usd

DAYS = 30
# Requests that ended without an error (a user's stop is not an error).
OK_OUTCOMES = [Usage.Outcome.COMPLETE, Usage.Outcome.STOPPED]
TOP = 10

# Chart geometry, in SVG user units (the SVG scales to its container's width).
WIDTH, HEIGHT = 900, 220
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 64, 8, 12, 28
GAP = 2


# Usage.cost has 10 decimal places: sums are taken in units of 1e-10 USD.
COST_UNITS = 10**10
COST_PRECISION = Decimal("1e-10")


def cost_total(**kwargs: Any) -> Coalesce:
    """An exact sum of ``cost`` in units of 1e-10 USD (turn it into USD with ``exact_cost``).

    SQLite keeps decimals as floats and sums them as floats, which is off in the last places;
    whole units summed as integers are exact on every database.
    """
    units = Cast(Round(F("cost") * COST_UNITS), BigIntegerField())
    return Coalesce(Sum(units, **kwargs), 0)


def exact_cost(units: Any) -> Decimal:
    return (Decimal(int(units)) / COST_UNITS).quantize(COST_PRECISION)


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class XLabel:
    x: float
    label: str


@dataclass(frozen=True)
class BarChart:
    title: str
    bars: list[Bar]
    ticks: list[Tick]
    xlabels: list[XLabel]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = PAD_LEFT
    right: int = WIDTH - PAD_RIGHT
    bottom: int = HEIGHT - PAD_BOTTOM


def _nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is ≥ value (a readable axis top)."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


def bar_chart(
    title: str, days: Sequence[date], values: Sequence[float], fmt: Callable[[float], str]
) -> BarChart:
    top = _nice_max(max(values, default=0))
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    slot = plot_w / max(len(days), 1)
    bars = []
    for i, (day, value) in enumerate(zip(days, values, strict=True)):
        h = plot_h * value / top
        bars.append(
            Bar(
                x=round(PAD_LEFT + i * slot + GAP / 2, 2),
                y=round(PAD_TOP + plot_h - h, 2),
                width=round(max(slot - GAP, 1), 2),
                height=round(h, 2),
                title=f"{day.isoformat()}: {fmt(value)}",
            )
        )
    ticks = [Tick(y=round(PAD_TOP + plot_h * (1 - f), 2), label=fmt(top * f)) for f in (0, 0.5, 1)]
    # A label a week, oldest first, and the last day (unless it would crowd the one before).
    labelled = [i for i in range(len(days)) if i % 7 == 0]
    if days and len(days) - 1 - labelled[-1] >= 4:
        labelled.append(len(days) - 1)
    xlabels = [
        XLabel(x=round(PAD_LEFT + i * slot + slot / 2, 2), label=days[i].strftime("%b %d"))
        for i in labelled
    ]
    return BarChart(title=title, bars=bars, ticks=ticks, xlabels=xlabels)


def _tokens(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 1_000:
        return f"{value / 1_000:.1f}k"
    return f"{value:.0f}"


def _usd(value: float) -> str:
    # Axis ticks and bar titles: three significant digits read well, and never round to $0.00.
    return usd(value, significant=3)


def window(today: date | None = None) -> tuple[list[date], datetime]:
    """The days shown (oldest first) and the aware datetime the window starts at."""
    today = today or timezone.localdate()
    days = [today - timedelta(days=n) for n in range(DAYS - 1, -1, -1)]
    start = timezone.make_aware(datetime.combine(days[0], time.min))
    return days, start


def dashboard_context(
    queryset: QuerySet[Usage] | None = None, today: date | None = None
) -> dict[str, Any]:
    """Everything the dashboard template shows: totals, two charts, top users and top models."""
    days, start = window(today)
    rows = (queryset if queryset is not None else Usage.objects.all()).filter(created__gte=start)
    tokens_expr = F("prompt_tokens") + F("completion_tokens")

    totals = rows.aggregate(
        requests=Count("id"),
        tokens=Coalesce(Sum(tokens_expr), 0),
        cost=cost_total(),
        errors=Count("id", filter=~Q(outcome__in=OK_OUTCOMES)),
    )
    totals["cost"] = exact_cost(totals["cost"])
    daily = {
        row["day"]: row
        for row in rows.annotate(day=TruncDate("created", tzinfo=timezone.get_current_timezone()))
        .values("day")
        .annotate(tokens=Coalesce(Sum(tokens_expr), 0), cost=cost_total(), requests=Count("id"))
        .order_by("day")
    }
    token_values = [float(daily.get(d, {}).get("tokens", 0)) for d in days]
    cost_values = [float(exact_cost(daily.get(d, {}).get("cost", 0))) for d in days]

    top_users = list(
        rows.filter(user__isnull=False)
        .values("user")
        .annotate(requests=Count("id"), tokens=Sum(tokens_expr), cost=cost_total())
        .order_by("-cost", "-tokens", "user")[:TOP]
    )
    users = get_user_model()._default_manager.in_bulk([row["user"] for row in top_users])
    for row in top_users:
        row["name"] = str(users.get(row["user"], row["user"]))
        row["cost"] = exact_cost(row["cost"])
    top_models = list(
        rows.values("model_used")
        .annotate(requests=Count("id"), tokens=Sum(tokens_expr), cost=cost_total())
        .order_by("-cost", "-tokens", "model_used")[:TOP]
    )
    for row in top_models:
        row["cost"] = exact_cost(row["cost"])
    return {
        "days": DAYS,
        "start": days[0],
        "end": days[-1],
        "totals": totals,
        "token_chart": bar_chart("Tokens per day", days, token_values, _tokens),
        "cost_chart": bar_chart("Cost per day (USD)", days, cost_values, _usd),
        "top_users": top_users,
        "top_models": top_models,
    }
