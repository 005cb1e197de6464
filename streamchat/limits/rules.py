"""Does one more request fit the user's limits, and if not, when does it free up?"""

from __future__ import annotations

import datetime as dt
import math
from decimal import ROUND_CEILING, Decimal
from typing import Any

from django.utils.translation import gettext

from .. import pricing
from ..models import Reservation
from ..pricing import usd
from .exceptions import LimitExceeded
from .ledger import COUNTED, MINUTE, PRECISION, period_starts
from .resolution import LIMIT_FIELDS, EffectiveLimits

# retry_after (s) for a refusal that running replies cause (a concurrent-stream slot, or budget
# they hold). A reply may end with its next delta, and nothing tells when: its lease is only the
# latest it frees up (a dead worker's). So the answer is this short poll, or the lease if sooner;
# a refused retry costs one admission query and no upstream call.
RUNNING_RETRY_AFTER = 5


def refusal_for(
    request: Reservation,
    limits: EffectiveLimits,
    used: dict[str, Any],
    now: dt.datetime,
    prompt_tokens: int = 0,
) -> LimitExceeded | None:
    """None when ``request`` fits every limit; else the refusal for the limit that frees up last
    (the send goes through only when all of them have).

    ``prompt_tokens``: the prompt's part of ``request.reserved_tokens`` (the rest is the reply's),
    so a budget refusal can say which ``max_tokens`` would fit now (``fits_max_tokens``).

    ``retry_after`` is when the limit frees up: for a sliding minute, when the oldest counted
    request leaves the window; for a day or month, when the period ends; for running replies
    (concurrent streams, or a budget they hold), ``RUNNING_RETRY_AFTER`` or their earliest lease
    if sooner. A limit of 0 refuses every request, whatever it would use (a free model's $0
    included), with no ``retry_after``.
    """
    _, next_day, _, next_month = period_starts(now)
    to_day, to_month = (next_day - now).total_seconds(), (next_month - now).total_seconds()
    lease = (used["first_expiry"] - now).total_seconds() if used["first_expiry"] else None
    running = None if lease is None else min(lease, RUNNING_RETRY_AFTER)
    refusals: list[LimitExceeded] = []

    def refuse(
        limit: str, retry_after: float | None, message: str, fits: int | None = None
    ) -> None:
        # Messages are built of translated sentences (gettext, the active language), each whole.
        if fits is not None:
            fits_text = gettext("— it fits with max_tokens ≤ %(fits)s.") % {"fits": f"{fits:,}"}
            message += " " + fits_text
        elif message.endswith(";"):
            message = message[:-1] + "."
        if getattr(limits, limit) == 0:
            retry_after = None
            message = gettext("Sending is switched off for your account (%(limit)s is 0).") % {
                "limit": limit
            }
            fits = None
        elif retry_after is not None:
            retry_after = max(1, math.ceil(retry_after))
            message += " " + gettext("Try again in %(duration)s.") % {
                "duration": _duration(retry_after)
            }
        refusals.append(
            LimitExceeded(limit, retry_after=retry_after, message=message, fits_max_tokens=fits)
        )

    # 0 is off, checked first: a $0 request fits a $0 budget, a 0-token one 0 tokens.
    for name in LIMIT_FIELDS:
        if getattr(limits, name) == 0:
            refuse(name, None, "")
    if refusals:
        return refusals[0]

    if (limit := limits.requests_per_minute) is not None and used["requests_per_minute"] >= limit:
        refuse(
            "requests_per_minute",
            _minute_frees_up(request.user_id, limit, now),
            gettext("Rate limit reached: %(limit)s requests per minute.") % {"limit": limit},
        )

    if (limit := limits.requests_per_day) is not None and used["requests_per_day"] >= limit:
        refuse(
            "requests_per_day",
            to_day,
            gettext("Daily limit reached: %(limit)s requests per day.") % {"limit": limit},
        )

    if (limit := limits.tokens_per_day) is not None:
        need, held = request.reserved_tokens, used["tokens_per_day"]
        reply, left = need - prompt_tokens, max(0, limit - held)
        room = left - prompt_tokens if left - prompt_tokens >= 1 else None
        if need > limit:
            refuse(
                "tokens_per_day",
                None,
                gettext(
                    "This reply could use up to %(reply)s tokens, more than your daily limit of"
                    " %(limit)s tokens allows;"
                )
                % {"reply": f"{reply:,}", "limit": f"{limit:,}"},
                room,
            )
        elif held + need > limit:
            # Fits once the running replies settle below their worst case? Then maybe sooner.
            running_hold = held - used["tokens_pending"] + need <= limit
            refuse(
                "tokens_per_day",
                min(running, to_day) if running_hold and running is not None else to_day,
                gettext(
                    "Daily token limit reached: %(held)s of %(limit)s tokens used or reserved."
                    " This reply could use up to %(reply)s tokens; %(left)s remain today;"
                )
                % {
                    "held": f"{held:,}",
                    "limit": f"{limit:,}",
                    "reply": f"{reply:,}",
                    "left": f"{left:,}",
                },
                room,
            )

    if (budget := limits.spend_per_month) is not None:
        need_cost, held_cost = request.reserved_cost, used["spend_per_month"]

        def fits(spent: Decimal) -> bool:
            # Unknown prices reserve no spend: admitted while some budget is left.
            return spent + need_cost <= budget if need_cost is not None else spent < budget

        if need_cost is not None and need_cost > budget:
            refuse(
                "spend_per_month",
                None,
                gettext(
                    "This reply could cost up to %(cost)s, more than your monthly budget"
                    " of %(budget)s allows;"
                )
                % {"cost": usd(need_cost), "budget": usd(budget)},
                _fits_spend(request, budget - held_cost, prompt_tokens),
            )
        elif not fits(held_cost):
            running_hold = fits(held_cost - used["spend_pending"])
            refuse(
                "spend_per_month",
                min(running, to_month) if running_hold and running is not None else to_month,
                gettext("Monthly budget reached: %(spent)s of %(budget)s spent or reserved;")
                % {"spent": usd(held_cost), "budget": usd(budget)},
                _fits_spend(request, budget - held_cost, prompt_tokens)
                if need_cost is not None
                else None,
            )

    if (limit := limits.concurrent_streams) is not None and used["concurrent_streams"] >= limit:
        refuse(
            "concurrent_streams",
            running,
            gettext("You have %(running)s replies running; the limit is %(limit)s.")
            % {"running": used["concurrent_streams"], "limit": limit},
        )

    if not refusals:
        return None
    chosen = max(refusals, key=lambda r: math.inf if r.retry_after is None else r.retry_after)
    # A smaller reply helps only when every limit hit is a budget; then the tightest one decides.
    fitting = [r.fits_max_tokens for r in refusals]
    if None in fitting:
        chosen.fits_max_tokens = None
    else:
        smallest = min(f for f in fitting if f is not None)
        if smallest != chosen.fits_max_tokens:
            chosen.message += " " + gettext("With your other limits: max_tokens ≤ %(fits)s.") % {
                "fits": f"{smallest:,}"
            }
        chosen.fits_max_tokens = smallest
        chosen.details["fits_max_tokens"] = smallest
    return chosen


def _fits_spend(request: Reservation, left: Decimal, prompt_tokens: int) -> int | None:
    """The largest ``max_tokens`` whose worst case fits in ``left`` USD, or None."""
    price = request.completion_price
    if not price or price <= 0 or left <= 0:
        return None

    def worst(tokens: int) -> Decimal:
        cost = pricing.cost(prompt_tokens, tokens, request.prompt_price, price) or Decimal(0)
        return cost.quantize(PRECISION, rounding=ROUND_CEILING)  # as admission rounds it

    tokens = int((left - worst(0)) * pricing.MILLION / price)
    step = max(1, math.ceil(PRECISION * pricing.MILLION / price))  # one rounding unit, in tokens
    while tokens >= 1 and worst(tokens) > left:  # rounded up past ``left``: a little less
        tokens -= step
    return tokens if tokens >= 1 else None


def _minute_frees_up(user_id: Any, limit: int, now: dt.datetime) -> float:
    """Seconds until fewer than ``limit`` requests remain in the sliding 60 s window."""
    times = list(
        Reservation.objects.filter(COUNTED, user_id=user_id, created__gte=now - MINUTE)
        .order_by("created")
        .values_list("created", flat=True)
    )
    index = len(times) - limit
    if limit == 0 or index < 0:
        return MINUTE.total_seconds()
    return (times[index] + MINUTE - now).total_seconds()


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{math.ceil(seconds / 60)} min"
    return f"{math.ceil(seconds / 3600)} h"
