"""Reserve before the upstream call, settle or release after it (see the package docstring)."""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Callable
from decimal import ROUND_CEILING, Decimal
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from django.db import DatabaseError, IntegrityError, OperationalError, connection, transaction
from django.utils import timezone
from django.utils.translation import gettext

from .. import pricing
from ..conf import app_settings
from ..models import LimitLock, Reservation, Usage
from .exceptions import LimitExceeded, LimitsUnavailable
from .ledger import PRECISION, figures, period_starts
from .resolution import EffectiveLimits, effective_limits
from .rules import refusal_for

logger = logging.getLogger("streamchat.limits")

T = TypeVar("T")

# Attempts of one admission when the database answers "locked" or a serialization failure.
ATTEMPTS = 3


def worst_case_cost(
    prompt_tokens: int,
    max_tokens: int,
    prompt_price: Decimal | None,
    completion_price: Decimal | None,
) -> Decimal | None:
    """The most a request can cost in USD (prices per million tokens), or None when unknown."""
    return pricing.cost(prompt_tokens, max_tokens, prompt_price, completion_price)


def reserve(
    user: Any,
    *,
    model: str,
    prompt_tokens: int,
    max_tokens: int,
    prompt_price: Decimal | None,
    completion_price: Decimal | None,
    source: str,
) -> Reservation:
    """Admit one upstream request or refuse it, before the call (``admit`` with nothing else in
    its transaction)."""
    reservation, _ = admit(
        user,
        model=model,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        prompt_price=prompt_price,
        completion_price=completion_price,
        source=source,
    )
    return reservation


def admit(
    user: Any,
    *,
    model: str,
    prompt_tokens: int,
    max_tokens: int,
    prompt_price: Decimal | None,
    completion_price: Decimal | None,
    source: str,
    then: Callable[[Reservation], T] | None = None,
    unlimited_rows: bool = True,
    lease_seconds: float | None = None,
    limits: EffectiveLimits | None = None,
) -> tuple[Reservation, T | None]:
    """Admit one upstream request or refuse it, before the call; on admission run
    ``then(reservation)`` in the same transaction, just before the reservation is saved (so it can
    link it to what it stores), and return its result with the reservation.

    ``then`` (the reply engine stores its rows there) makes admission and its writes one
    transaction: when ``then`` raises, nothing of the admission is kept either, and the
    exception propagates. It may run more than once (a locked database is retried), always in a
    fresh transaction. ``lease_seconds``: the first lease, for a caller that renews it (default:
    ``TOTAL_TIMEOUT`` + ``LEASE_SECONDS``, for one that does not). ``limits``: the user's
    ``EffectiveLimits`` when the caller has them already. ``unlimited_rows=False`` stores
    no reservation for a user with no limit at all (nothing to count and no slot to hold; the
    request's Usage row still records it): the returned reservation is unsaved, and settling or
    releasing it does nothing.

    Returns the reservation to ``settle`` (or ``release``) when the request is over. Raises
    ``LimitExceeded`` after storing the refusal (a ``Usage`` row with outcome "refused" and the
    limit's name as ``error_code``, nothing else), or ``LimitsUnavailable`` when the database
    fails and ``LIMITS_FAIL_OPEN`` is off. Staff skip every limit when ``EXEMPT_STAFF`` is on
    (their requests are still recorded, so consumption stays true). Prices: USD per million
    tokens; with either unknown only tokens are reserved.
    """
    if prompt_tokens < 0 or max_tokens < 0:
        raise ValueError("prompt_tokens and max_tokens must not be negative")
    if not getattr(user, "pk", None):
        raise ValueError("limits apply to a saved user")
    cost = worst_case_cost(prompt_tokens, max_tokens, prompt_price, completion_price)
    request = Reservation(
        user_id=user.pk,
        source=source,
        model=model,
        reserved_tokens=prompt_tokens + max_tokens,
        # Rounded up to the ledger's precision: rounding a worst case down could overbook.
        reserved_cost=None if cost is None else cost.quantize(PRECISION, rounding=ROUND_CEILING),
        prompt_price=prompt_price,
        completion_price=completion_price,
    )
    exempt = bool(app_settings.EXEMPT_STAFF and getattr(user, "is_staff", False))
    result: list[Any] = [None]

    def run_then() -> None:
        if then is not None:
            result[0] = then(request)

    try:
        refusal = _admit(
            request,
            EffectiveLimits() if exempt else limits or effective_limits(user),
            run_then,
            unlimited_rows,
            lease_seconds,
            prompt_tokens,
        )
    except IntegrityError:
        raise  # from ``then``: the caller's own constraint (a repeated delivery, say)
    except DatabaseError as error:
        if exempt or app_settings.LIMITS_FAIL_OPEN:
            logger.warning("streamchat: limits unavailable, admitting user %s (%s)", user.pk, error)
            request.pk = None  # unsaved: settle and release do nothing
            request.created = request.expires = timezone.now()
            if then is not None:
                with transaction.atomic():
                    result[0] = then(request)
            return request, result[0]
        logger.error("streamchat: limits unavailable, refusing user %s (%s)", user.pk, error)
        raise LimitsUnavailable(
            gettext(
                "Your usage limits cannot be checked right now, so nothing was sent."
                " Try again shortly."
            ),
            retry_after=5,
        ) from error
    if refusal is None:
        return request, result[0]
    _record_refusal(request, refusal)
    raise refusal


def _admit(
    request: Reservation,
    limits: EffectiveLimits,
    then: Callable[[], None],
    unlimited_rows: bool = True,
    lease_seconds: float | None = None,
    prompt_tokens: int = 0,
) -> LimitExceeded | None:
    """Save ``request`` if it fits and run ``then`` in the same transaction; otherwise return the
    refusal. Retries transient lock errors."""
    for attempt in range(ATTEMPTS):
        request.pk = None  # a failed commit may have left one from the last attempt
        try:
            with transaction.atomic():
                if limits.unlimited:  # nothing to count, so nothing to serialise
                    _stamp(request, timezone.now(), lease_seconds)
                    then()
                    if unlimited_rows:
                        request.save(force_insert=True)
                    return None
                _lock(request.user_id)
                now = timezone.now()  # after the lock: admissions are stamped in lock order
                refusal = refusal_for(
                    request, limits, figures(request.user_id, now), now, prompt_tokens
                )
                if refusal is None:
                    _stamp(request, now, lease_seconds)
                    then()
                    request.save(force_insert=True)
                return refusal
        except OperationalError:
            # "database is locked" past the busy timeout, or a serialization failure: try again,
            # unless it broke a transaction of the caller's that we cannot restart.
            if attempt == ATTEMPTS - 1 or connection.in_atomic_block:
                raise
            time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))
    raise AssertionError("unreachable")


def _lock(user_id: Any) -> None:
    # The first statement writes (see the package docstring). A user's first admission creates
    # the row; on PostgreSQL a concurrent first admission waits on the unique key, then updates.
    now = timezone.now()
    if LimitLock.objects.filter(user_id=user_id).update(locked=now):
        return
    LimitLock.objects.bulk_create([LimitLock(user_id=user_id, locked=now)], ignore_conflicts=True)
    LimitLock.objects.filter(user_id=user_id).update(locked=now)


def _stamp(request: Reservation, now: dt.datetime, lease_seconds: float | None = None) -> None:
    # No live reply outlives TOTAL_TIMEOUT, so an unrenewed lease never lapses under a live reply;
    # an engine that renews at each checkpoint asks for LEASE_SECONDS from the start, so a worker
    # that dies before its first renewal frees the slot as soon.
    if lease_seconds is None:
        lease_seconds = float(app_settings.TOTAL_TIMEOUT) + float(app_settings.LEASE_SECONDS)
    request.created = now
    request.expires = now + dt.timedelta(seconds=lease_seconds)


def _record_refusal(request: Reservation, refusal: LimitExceeded) -> None:
    # The refusal record is all a refused send stores: admins see refusals in the usage views.
    try:
        Usage.objects.create(
            user_id=request.user_id,
            source=request.source,
            model_requested=request.model,
            outcome=Usage.Outcome.REFUSED,
            error_code=refusal.limit,
            details={"retry_after": refusal.retry_after},
        )
    except DatabaseError:
        logger.exception("streamchat: could not record a refusal of user %s", request.user_id)


def settle(
    reservation: Reservation, *, prompt_tokens: int, completion_tokens: int, cost: Decimal | None
) -> None:
    """Replace the worst case with the real figures; only the first settle or release counts.

    ``cost`` None: computed from the prices given to ``reserve``, or 0 when those were unknown.
    A database failure is logged, not raised: the lease still frees the slot.
    """
    if cost is None:
        cost = worst_case_cost(
            prompt_tokens, completion_tokens, reservation.prompt_price, reservation.completion_price
        )
    cost = Decimal(0) if cost is None else Decimal(str(cost))
    settled = _finish(
        reservation,
        state=Reservation.State.SETTLED,
        tokens=prompt_tokens + completion_tokens,
        cost=cost,
    )
    if settled and reservation.reserved_cost is not None and cost > reservation.reserved_cost:
        # Recorded as it is: the budget shows the overrun and the next send is refused.
        logger.warning(
            "streamchat: reservation %s overran: cost %s, reserved %s",
            reservation.pk,
            cost,
            reservation.reserved_cost,
        )


def release(reservation: Reservation) -> None:
    """The upstream call never happened: the reservation counts nothing any more. Idempotent."""
    _finish(reservation, state=Reservation.State.RELEASED)


def _finish(reservation: Reservation, **fields: Any) -> bool:
    if reservation.pk is None:  # admitted while the limits were unavailable
        return False
    fields["settled"] = timezone.now()
    try:
        # One conditional UPDATE: of two concurrent calls, exactly one finds the row unfinished.
        done = Reservation.objects.filter(
            pk=reservation.pk, state__in=[Reservation.State.OPEN, Reservation.State.EXPIRED]
        ).update(**fields)
    except DatabaseError:
        logger.exception("streamchat: could not finish reservation %s", reservation.pk)
        return False
    if done:
        for name, value in fields.items():
            setattr(reservation, name, value)
    return bool(done)


def renew(reservation: Reservation) -> None:
    """Move the lease to LEASE_SECONDS from now. An engine that calls it at each checkpoint frees
    a dead worker's slot within LEASE_SECONDS instead of TOTAL_TIMEOUT + LEASE_SECONDS."""
    if reservation.pk is None:
        return
    expires = timezone.now() + dt.timedelta(seconds=float(app_settings.LEASE_SECONDS))
    Reservation.objects.filter(pk=reservation.pk, state=Reservation.State.OPEN).update(
        expires=expires
    )
    reservation.expires = expires


def reap_expired(*, now: dt.datetime | None = None) -> int:
    """Mark open reservations whose lease lapsed as expired, and delete finished reservations
    from before last month (nothing counts them any more). Returns how many expired.

    Admission already ignores a lapsed lease, so no user waits for this to run; it keeps the
    table honest for admins. Call it now and then from any one worker.
    """
    now = now or timezone.now()
    expired = Reservation.objects.filter(state=Reservation.State.OPEN, expires__lte=now).update(
        state=Reservation.State.EXPIRED
    )
    _, _, month_start, _ = period_starts(now)
    Reservation.objects.filter(created__lt=month_start - dt.timedelta(days=1)).exclude(
        state=Reservation.State.OPEN
    ).delete()
    if expired:
        logger.info("streamchat: %d limit reservations expired (their workers died)", expired)
    return expired


# --- Async twins: the ORM work runs in Channels' database thread ------------------------------


async def areserve(
    user: Any,
    *,
    model: str,
    prompt_tokens: int,
    max_tokens: int,
    prompt_price: Decimal | None,
    completion_price: Decimal | None,
    source: str,
) -> Reservation:
    reservation: Reservation = await database_sync_to_async(reserve)(
        user,
        model=model,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        prompt_price=prompt_price,
        completion_price=completion_price,
        source=source,
    )
    return reservation


async def asettle(
    reservation: Reservation, *, prompt_tokens: int, completion_tokens: int, cost: Decimal | None
) -> None:
    await database_sync_to_async(settle)(
        reservation, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost=cost
    )


async def arelease(reservation: Reservation) -> None:
    await database_sync_to_async(release)(reservation)


async def arenew(reservation: Reservation) -> None:
    await database_sync_to_async(renew)(reservation)


async def areap_expired(*, now: dt.datetime | None = None) -> int:
    expired: int = await database_sync_to_async(reap_expired)(now=now)
    return expired
