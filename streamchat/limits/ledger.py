"""What a user has used, counted from their reservations (``streamchat.models.Reservation``).

Periods: "per minute" is a sliding window of the last 60 seconds; "per day" and "per month" are
calendar periods in the site's time zone (``TIME_ZONE``), so they reset at midnight and on the
first of the month.

Counted: every admitted request except released ones (the upstream call never happened). An open
or expired reservation counts its worst case, a settled one its real figures. Refusals count
nothing.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from channels.db import database_sync_to_async
from django.db.models import Case, Count, DecimalField, F, Min, Q, Sum, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from ..models import Reservation
from .resolution import LIMIT_FIELDS

MINUTE = dt.timedelta(seconds=60)
# The ledger's precision (decimal_places=10 on the cost columns).
PRECISION = Decimal("1e-10")

COUNTED = ~Q(state=Reservation.State.RELEASED)
_MONEY = DecimalField(max_digits=18, decimal_places=10)
_ZERO = Value(Decimal(0), output_field=_MONEY)


def live(now: dt.datetime) -> Q:
    """Open reservations whose lease has not lapsed: the replies running now."""
    return Q(state=Reservation.State.OPEN, expires__gt=now)


def period_starts(now: dt.datetime) -> tuple[dt.datetime, dt.datetime, dt.datetime, dt.datetime]:
    """Start of today, of tomorrow, of this month and of the next, in the site's time zone."""
    # The default zone, not one a request may have activated: the same periods for everyone.
    # (Naive datetimes when the host runs with USE_TZ = False.)
    local = now
    if timezone.is_aware(now):
        local = timezone.localtime(now, timezone.get_default_timezone())
    today = local.date()
    month = today.replace(day=1)
    next_month = (month + dt.timedelta(days=32)).replace(day=1)

    def midnight(day: dt.date) -> dt.datetime:
        return dt.datetime.combine(day, dt.time.min, tzinfo=local.tzinfo)

    return midnight(today), midnight(today + dt.timedelta(days=1)), midnight(month), midnight(
        next_month
    )


def figures(user_id: Any, now: dt.datetime) -> dict[str, Any]:
    """Every counter of one user, from one query so they agree with each other.

    The five limit fields, plus ``tokens_pending`` / ``spend_pending`` (the worst cases of the
    replies running now) and ``first_expiry`` (the earliest lease among them, or None).
    """
    day_start, _, month_start, _ = period_starts(now)
    minute_ago = now - MINUTE
    running = live(now)
    settled = Q(state=Reservation.State.SETTLED)
    in_day = COUNTED & Q(created__gte=day_start)
    in_month = COUNTED & Q(created__gte=month_start)
    tokens = Case(When(settled, then=F("tokens")), default=F("reserved_tokens"))
    cost = Case(
        When(settled, then=F("cost")),
        default=Coalesce(F("reserved_cost"), _ZERO, output_field=_MONEY),
        output_field=_MONEY,
    )
    counts = Reservation.objects.filter(
        Q(user_id=user_id), Q(created__gte=min(minute_ago, month_start)) | running
    ).aggregate(
        requests_per_minute=Count("pk", filter=COUNTED & Q(created__gte=minute_ago)),
        requests_per_day=Count("pk", filter=in_day),
        tokens_per_day=Coalesce(Sum(tokens, filter=in_day), 0),
        spend_per_month=Coalesce(Sum(cost, filter=in_month), _ZERO, output_field=_MONEY),
        concurrent_streams=Count("pk", filter=running),
        tokens_pending=Coalesce(Sum("reserved_tokens", filter=in_day & running), 0),
        spend_pending=Coalesce(
            Sum("reserved_cost", filter=in_month & running), _ZERO, output_field=_MONEY
        ),
        first_expiry=Min("expires", filter=running),
    )
    for name in ("spend_per_month", "spend_pending"):
        counts[name] = Decimal(counts[name]).quantize(PRECISION)
    return counts


def consumption(user: Any, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """What the user has used, keyed like the limits (``EffectiveLimits.as_dict()``): requests in
    the last 60 s and today, tokens today, spend (USD) this month, streams running now. Replies
    still streaming count by what they reserved."""
    counts = figures(user.pk, now or timezone.now())
    return {name: counts[name] for name in LIMIT_FIELDS}


async def aconsumption(user: Any, *, now: dt.datetime | None = None) -> dict[str, Any]:
    used: dict[str, Any] = await database_sync_to_async(consumption)(user, now=now)
    return used
