"""Per-user rate limits and budgets (streamchat.limits): precedence, each limit kind, reserve and
settle, refusals, leases, staff exemption and failing closed. Real concurrency is in
test_limits_concurrency.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import OperationalError, connection, connections
from django.utils import timezone

from streamchat import limits
from streamchat.limits.rules import RUNNING_RETRY_AFTER
from streamchat.models import Conversation, LimitLock, Message, RateLimit, Reservation, Usage

pytestmark = pytest.mark.django_db

SEND = {
    "model": "openai/gpt-4o-mini",
    "prompt_tokens": 100,
    "max_tokens": 400,
    "prompt_price": None,
    "completion_price": None,
    "source": "python",
}
# Prices in USD per million tokens: 100 prompt + 400 completion tokens cost at most $0.0017.
PRICED = {**SEND, "prompt_price": Decimal("1"), "completion_price": Decimal("4")}
WORST = Decimal("0.0017")


def send(user: Any, **overrides: Any) -> Reservation:
    return limits.reserve(user, **{**SEND, **overrides})


def refused(user: Any, **overrides: Any) -> limits.LimitExceeded:
    with pytest.raises(limits.LimitExceeded) as info:
        send(user, **overrides)
    return info.value


def set_limits(*, user: Any = None, group: Group | None = None, **fields: Any) -> RateLimit:
    scope = "user" if user else "group" if group else "default"
    return RateLimit.objects.create(scope=scope, user=user, group=group, **fields)


@pytest.fixture
def streamchat_settings(settings: Any) -> Callable[..., None]:
    def change(**values: Any) -> None:
        settings.STREAMCHAT = {**settings.STREAMCHAT, **values}

    return change


# --- RL-10: which limits apply ---------------------------------------------------------------

# (rows that exist: (scope, target, fields)), the limits user "me" gets, and the deciding scope.
# Targets: "me", "other" (another user), "g1"/"g2" (groups of mine), "g3" (a group I am not in).
PRECEDENCE = [
    pytest.param([], {}, None, id="no-rows-unlimited"),
    pytest.param(
        [("default", None, {"requests_per_minute": 10, "spend_per_month": Decimal("5")})],
        {"requests_per_minute": 10, "spend_per_month": Decimal("5")},
        "default",
        id="default-only",
    ),
    pytest.param(
        [
            ("default", None, {"requests_per_minute": 10, "requests_per_day": 100}),
            ("group", "g1", {"requests_per_minute": 20}),
        ],
        {"requests_per_minute": 20},
        "group",
        id="group-beats-default-and-its-blanks-are-unlimited",
    ),
    pytest.param(
        [
            ("default", None, {"requests_per_minute": 10}),
            ("group", "g3", {"requests_per_minute": 99}),
        ],
        {"requests_per_minute": 10},
        "default",
        id="a-group-i-am-not-in-is-ignored",
    ),
    pytest.param(
        [
            (
                "group",
                "g1",
                {
                    "requests_per_minute": 20,
                    "requests_per_day": 50,
                    "tokens_per_day": 1000,
                    "spend_per_month": Decimal("1"),
                    "concurrent_streams": 1,
                },
            ),
            (
                "group",
                "g2",
                {
                    "requests_per_minute": 30,
                    "tokens_per_day": 500,
                    "spend_per_month": Decimal("2"),
                    "concurrent_streams": 3,
                },
            ),
        ],
        {
            "requests_per_minute": 30,
            "requests_per_day": None,  # blank in g2: unlimited is the most generous
            "tokens_per_day": 1000,
            "spend_per_month": Decimal("2"),
            "concurrent_streams": 3,
        },
        "group",
        id="two-groups-most-generous-per-field",
    ),
    pytest.param(
        [
            ("default", None, {"requests_per_minute": 10, "concurrent_streams": 2}),
            ("group", "g1", {"requests_per_minute": 20, "tokens_per_day": 100}),
            ("user", "me", {"requests_per_minute": 5}),
        ],
        {"requests_per_minute": 5},
        "user",
        id="user-beats-group-and-default-and-its-blanks-are-unlimited",
    ),
    pytest.param(
        [
            ("default", None, {"requests_per_minute": 10}),
            ("user", "other", {"requests_per_minute": 1}),
        ],
        {"requests_per_minute": 10},
        "default",
        id="another-users-row-is-ignored",
    ),
]


@pytest.mark.parametrize(("rows", "expected", "scope"), PRECEDENCE)
def test_rl10_precedence_table(user_factory, rows, expected, scope):
    me, other = user_factory(), user_factory()
    groups = {name: Group.objects.create(name=name) for name in ("g1", "g2", "g3")}
    me.groups.add(groups["g1"], groups["g2"])
    for row_scope, target, fields in rows:
        if row_scope == "user":
            set_limits(user=me if target == "me" else other, **fields)
        elif row_scope == "group":
            set_limits(group=groups[target], **fields)
        else:
            set_limits(**fields)

    effective = limits.effective_limits(me)

    assert effective.as_dict() == {name: expected.get(name) for name in RateLimit.LIMIT_FIELDS}
    assert effective.scope == scope


def test_effective_limits_and_consumption_share_their_keys(user):
    assert set(limits.effective_limits(user).as_dict()) == set(limits.consumption(user))


# --- Each limit kind -------------------------------------------------------------------------


def test_requests_per_minute_admits_k_then_refuses(user):
    set_limits(requests_per_minute=3)
    for _ in range(3):
        send(user)

    error = refused(user)

    assert error.limit == "requests_per_minute"
    assert error.code == "rate_limited"
    assert 59 <= error.retry_after <= 60
    assert "3 requests per minute" in error.message


def test_requests_per_minute_retry_after_is_when_the_oldest_leaves_the_window(user):
    set_limits(requests_per_minute=2)
    first, second = send(user), send(user)
    now = timezone.now()
    Reservation.objects.filter(pk=first.pk).update(created=now - dt.timedelta(seconds=50))
    Reservation.objects.filter(pk=second.pk).update(created=now - dt.timedelta(seconds=20))

    error = refused(user)

    assert error.retry_after in (10, 11)
    # Once the oldest has left the window, a send goes through again.
    Reservation.objects.filter(pk=first.pk).update(created=now - dt.timedelta(seconds=61))
    send(user)


def test_requests_per_day_refused_until_midnight(user):
    set_limits(requests_per_day=2)
    send(user)
    send(user)

    before = timezone.now()
    error = refused(user)
    after = timezone.now()

    _, tomorrow, _, _ = limits.period_starts(before)
    assert error.limit == "requests_per_day"
    # Midnight as seen at the refusal, which came between ``before`` and ``after`` (whole seconds).
    until = (tomorrow - after).total_seconds(), (tomorrow - before).total_seconds()
    assert until[0] <= error.retry_after <= until[1] + 1, (error.retry_after, until)


def test_requests_of_yesterday_do_not_count_today(user):
    set_limits(requests_per_day=1)
    earlier = send(user)
    today, _, _, _ = limits.period_starts(timezone.now())
    Reservation.objects.filter(pk=earlier.pk).update(created=today - dt.timedelta(seconds=1))

    send(user)


def test_tokens_per_day_reserve_prompt_plus_max_tokens(user):
    set_limits(tokens_per_day=1200)
    send(user)  # 500 tokens reserved
    send(user)  # 1000

    error = refused(user)  # 1500 > 1200

    assert error.limit == "tokens_per_day"
    send(user, prompt_tokens=100, max_tokens=100)  # 1200 fits exactly
    assert limits.consumption(user)["tokens_per_day"] == 1200


def test_a_request_larger_than_the_limit_itself_cannot_be_waited_for(user):
    set_limits(tokens_per_day=300, spend_per_month=Decimal("0.001"))

    error = refused(user)
    assert error.limit == "tokens_per_day"
    assert error.retry_after is None
    assert "more than your daily limit of 300 tokens allows" in error.message
    assert error.fits_max_tokens == 200 and "max_tokens ≤ 200" in error.message

    RateLimit.objects.update(tokens_per_day=None)
    error = refused(user, **PRICED)
    assert error.limit == "spend_per_month"
    assert error.retry_after is None


def test_spend_per_month_reserves_the_worst_case(user):
    set_limits(spend_per_month=WORST * 3)
    for _ in range(3):
        send(user, **PRICED)

    error = refused(user, **PRICED)

    assert error.limit == "spend_per_month"
    assert limits.consumption(user)["spend_per_month"] == WORST * 3


def test_spend_with_unknown_prices_reserves_tokens_only_and_admits_while_budget_is_left(user):
    set_limits(spend_per_month=Decimal("0.01"))
    first = send(user)  # prices unknown: nothing reserved against the budget
    second = send(user)
    assert first.reserved_cost is None
    assert limits.consumption(user)["spend_per_month"] == 0

    limits.settle(first, prompt_tokens=100, completion_tokens=300, cost=Decimal("0.004"))
    send(user)  # $0.004 of $0.01 spent: admitted
    limits.settle(second, prompt_tokens=100, completion_tokens=300, cost=Decimal("0.007"))

    error = refused(user)  # $0.011 spent: an overrun, recorded, blocks the next send

    assert error.limit == "spend_per_month"
    assert limits.consumption(user)["spend_per_month"] == Decimal("0.011")


def test_spend_of_last_month_does_not_count(user):
    set_limits(spend_per_month=WORST)
    old = send(user, **PRICED)
    _, _, month_start, _ = limits.period_starts(timezone.now())
    Reservation.objects.filter(pk=old.pk).update(created=month_start - dt.timedelta(seconds=1))

    send(user, **PRICED)


def test_concurrent_streams_slot_is_freed_by_settle_and_by_release(user):
    set_limits(concurrent_streams=2)
    first, second = send(user), send(user)

    error = refused(user)
    assert error.limit == "concurrent_streams"
    assert error.retry_after is not None
    assert limits.consumption(user)["concurrent_streams"] == 2

    # A reply that completes, stops or errors settles; one that never reached upstream releases.
    limits.settle(first, prompt_tokens=100, completion_tokens=5, cost=None)
    third = send(user)
    limits.release(second)
    send(user)
    limits.settle(third, prompt_tokens=100, completion_tokens=0, cost=None)  # errored at once
    send(user)
    assert limits.consumption(user)["concurrent_streams"] == 2


def test_released_requests_count_nothing(user):
    set_limits(requests_per_minute=1, tokens_per_day=500)
    limits.release(send(user))

    send(user)
    assert limits.consumption(user)["requests_per_minute"] == 1
    assert limits.consumption(user)["tokens_per_day"] == 500


ZERO_REQUESTS = [
    pytest.param(SEND, id="unknown-prices"),
    pytest.param(PRICED, id="priced"),
    pytest.param({**SEND, "prompt_price": Decimal(0), "completion_price": Decimal(0)}, id="free"),
    pytest.param({**SEND, "prompt_tokens": 0, "max_tokens": 0}, id="zero-tokens"),
]


@pytest.mark.parametrize("request_", ZERO_REQUESTS)
@pytest.mark.parametrize("field", limits.LIMIT_FIELDS)
def test_a_limit_of_zero_switches_sending_off_whatever_the_request(user, field, request_):
    # Even a request that uses nothing of it: $0 at a free model, 0 tokens.
    set_limits(**{field: 0})

    error = refused(user, **request_)

    assert error.limit == field
    assert error.retry_after is None
    assert "switched off" in error.message
    assert not Reservation.objects.exists()
    assert Usage.objects.get().error_code == field


def test_several_limits_hit_the_refusal_names_the_one_that_frees_up_last(user):
    set_limits(requests_per_minute=1, requests_per_day=1)
    send(user)

    error = refused(user)

    assert error.limit == "requests_per_day"  # waiting a minute would not help


def test_days_and_months_follow_the_sites_time_zone(settings):
    settings.TIME_ZONE = "America/New_York"
    utc = dt.UTC
    now = dt.datetime(2026, 3, 1, 3, 0, tzinfo=utc)  # 22:00 on 28 February in New York

    day, next_day, month, next_month = limits.period_starts(now)

    assert day == dt.datetime(2026, 2, 28, 5, 0, tzinfo=utc)
    assert next_day == next_month == dt.datetime(2026, 3, 1, 5, 0, tzinfo=utc)
    assert month == dt.datetime(2026, 2, 1, 5, 0, tzinfo=utc)


# --- Retry-after figures -----------------------------------------------------------------------


def test_concurrent_streams_retry_after_is_a_short_poll_not_the_lease(user, streamchat_settings):
    # A running reply may end with its next delta: the refusal says to retry soon, not when the
    # lease of TOTAL_TIMEOUT + LEASE_SECONDS lapses (only a dead worker's reply lasts that long).
    streamchat_settings(TOTAL_TIMEOUT=600.0, LEASE_SECONDS=30)
    set_limits(concurrent_streams=1)
    running = send(user)

    assert refused(user).retry_after == RUNNING_RETRY_AFTER

    # A lease that lapses sooner than the poll is the sooner answer.
    streamchat_settings(LEASE_SECONDS=1)
    limits.renew(running)
    assert refused(user).retry_after == 1


def test_budget_held_by_running_replies_frees_up_soon(user, streamchat_settings):
    streamchat_settings(TOTAL_TIMEOUT=600.0, LEASE_SECONDS=30)
    set_limits(tokens_per_day=600)
    running = send(user)

    error = refused(user)  # fits once the running reply settles below its worst case

    assert error.limit == "tokens_per_day"
    assert error.retry_after == RUNNING_RETRY_AFTER
    limits.settle(running, prompt_tokens=50, completion_tokens=50, cost=None)
    send(user)


def test_retry_after_is_stored_with_the_refusal(user):
    set_limits(requests_per_minute=0)

    refused(user)

    record = Usage.objects.get()
    assert record.details == {"retry_after": None}


# --- RL-03: settle releases the difference, an overrun blocks ----------------------------------


def test_rl03_difference_released_at_settle(user):
    set_limits(spend_per_month=WORST * 2, tokens_per_day=1000)
    first, _ = send(user, **PRICED), send(user, **PRICED)
    assert refused(user, **PRICED).limit in ("spend_per_month", "tokens_per_day")

    limits.settle(first, prompt_tokens=100, completion_tokens=50, cost=None)

    used = limits.consumption(user)
    assert used["spend_per_month"] == WORST + Decimal("0.0003")  # 100 × $1 + 50 × $4 per million
    assert used["tokens_per_day"] == 500 + 150
    first.refresh_from_db()
    assert (first.state, first.tokens, first.cost) == ("settled", 150, Decimal("0.0003"))
    send(user, **{**PRICED, "max_tokens": 200})  # the released difference is usable at once


def test_rl03_overrun_recorded_and_blocks_the_next_send(user):
    set_limits(spend_per_month=WORST)
    running = send(user, **PRICED)

    limits.settle(running, prompt_tokens=100, completion_tokens=400, cost=Decimal("0.0100"))

    assert limits.consumption(user)["spend_per_month"] == Decimal("0.0100")
    error = refused(user, **PRICED)
    assert error.limit == "spend_per_month"
    assert error.retry_after is not None  # next month


def test_settle_reported_cost_wins_over_the_price_table(user):
    running = send(user, **PRICED)

    limits.settle(running, prompt_tokens=100, completion_tokens=10, cost=Decimal("0.5"))

    assert Reservation.objects.get().cost == Decimal("0.5")


# --- RL-04: a dead worker's reservation expires --------------------------------------------------


def test_rl04_a_lapsed_lease_frees_the_slot_without_the_reaper(user):
    set_limits(concurrent_streams=1)
    orphan = send(user)  # its worker dies: never settled
    assert refused(user).limit == "concurrent_streams"

    Reservation.objects.filter(pk=orphan.pk).update(expires=timezone.now())

    send(user)


def test_rl04_reaper_marks_expired_and_their_worst_case_keeps_counting(user):
    set_limits(concurrent_streams=1, tokens_per_day=1000)
    orphan = send(user)
    Reservation.objects.filter(pk=orphan.pk).update(expires=timezone.now())

    assert limits.reap_expired() == 1
    assert limits.reap_expired() == 0

    orphan.refresh_from_db()
    assert orphan.state == "expired"
    used = limits.consumption(user)
    assert (used["concurrent_streams"], used["tokens_per_day"]) == (0, 500)
    # A worker that was only slow may still settle it, once.
    limits.settle(orphan, prompt_tokens=100, completion_tokens=20, cost=None)
    assert limits.consumption(user)["tokens_per_day"] == 120


def test_reaper_deletes_finished_reservations_from_before_last_month(user):
    old, recent, running = send(user), send(user), send(user)
    limits.settle(old, prompt_tokens=1, completion_tokens=1, cost=None)
    limits.settle(recent, prompt_tokens=1, completion_tokens=1, cost=None)
    _, _, month_start, _ = limits.period_starts(timezone.now())
    Reservation.objects.filter(pk=old.pk).update(created=month_start - dt.timedelta(days=40))

    limits.reap_expired()

    assert set(Reservation.objects.values_list("pk", flat=True)) == {recent.pk, running.pk}


# --- RL-11: settled exactly once -------------------------------------------------------------


def test_rl11_settle_twice_counts_once(user):
    running = send(user, **PRICED)

    limits.settle(running, prompt_tokens=100, completion_tokens=10, cost=None)  # stop
    limits.settle(running, prompt_tokens=100, completion_tokens=400, cost=None)  # disconnect
    limits.release(running)  # regenerate path giving it back

    row = Reservation.objects.get()
    assert (row.state, row.tokens) == ("settled", 110)
    # A fresh copy of the same reservation (another code path) is no different.
    limits.settle(
        Reservation.objects.get(pk=running.pk), prompt_tokens=1, completion_tokens=1, cost=None
    )
    assert Reservation.objects.get().tokens == 110


def test_rl11_a_released_reservation_cannot_be_settled(user):
    running = send(user)
    limits.release(running)

    limits.settle(running, prompt_tokens=100, completion_tokens=10, cost=None)

    assert Reservation.objects.get().state == "released"
    assert limits.consumption(user)["requests_per_minute"] == 0


# --- A refused send stores only its refusal ------------------------------------------------------


def test_refused_send_stores_only_the_refusal_record(user):
    set_limits(requests_per_minute=1)
    send(user)
    models = (Conversation, Message, Reservation, LimitLock, Usage)
    before = {model: model.objects.count() for model in models}

    refused(user, source="websocket", model="anthropic/claude-3.5-haiku")

    after = {model: model.objects.count() for model in models}
    assert {m: after[m] - before[m] for m in models if after[m] != before[m]} == {Usage: 1}
    record = Usage.objects.get(outcome="refused")
    assert (record.user, record.source) == (user, "websocket")
    assert (record.error_code, record.model_requested) == (
        "requests_per_minute",
        "anthropic/claude-3.5-haiku",
    )
    assert (record.prompt_tokens, record.completion_tokens, record.cost) == (0, 0, 0)
    assert record.message is None


def test_refusals_do_not_count_as_requests(user):
    set_limits(requests_per_minute=1)
    send(user)
    for _ in range(3):
        refused(user)

    assert limits.consumption(user)["requests_per_minute"] == 1


# --- Staff exemption --------------------------------------------------------------------------


def test_staff_are_exempt_only_with_the_setting(user_factory, streamchat_settings):
    staff, member = user_factory(is_staff=True), user_factory()
    set_limits(requests_per_minute=0)
    assert refused(staff).limit == "requests_per_minute"

    streamchat_settings(EXEMPT_STAFF=True)

    for _ in range(3):
        send(staff)
    assert refused(member).limit == "requests_per_minute"
    # Exempt requests are still recorded, so consumption stays true.
    assert limits.consumption(staff)["requests_per_minute"] == 3


# --- Fail closed -------------------------------------------------------------------------------


def _database_down(execute, sql, params, many, context):
    raise OperationalError("could not connect to server: the limit store is down")


def test_fail_closed_when_the_limit_store_is_unavailable(user):
    set_limits(requests_per_minute=100)

    with connection.execute_wrapper(_database_down):
        with pytest.raises(limits.LimitsUnavailable) as info:
            send(user)

    assert info.value.code == "limits_unavailable"
    assert "cannot be checked" in info.value.message
    assert Reservation.objects.count() == Usage.objects.count() == 0


def test_fail_open_setting_admits_when_the_limit_store_is_unavailable(user, streamchat_settings):
    streamchat_settings(LIMITS_FAIL_OPEN=True)
    set_limits(requests_per_minute=100)

    with connection.execute_wrapper(_database_down):
        admitted = send(user)
        limits.settle(admitted, prompt_tokens=1, completion_tokens=1, cost=None)  # a no-op

    assert admitted.pk is None
    assert Reservation.objects.count() == 0


def test_our_codes_are_apart_from_openrouters_429():
    assert limits.LimitExceeded("requests_per_minute", retry_after=1, message="x").code == (
        "rate_limited"
    )
    assert limits.LimitsUnavailable("x").code == "limits_unavailable"
    assert isinstance(limits.LimitsUnavailable("x"), limits.LimitError)


# --- Arguments and the async twins ---------------------------------------------------------------


def test_worst_case_cost():
    assert limits.worst_case_cost(100, 400, Decimal("1"), Decimal("4")) == WORST
    assert limits.worst_case_cost(100, 400, None, Decimal("4")) is None


def test_reserve_rejects_negative_token_counts(user):
    with pytest.raises(ValueError, match="negative"):
        send(user, max_tokens=-1)


@pytest.mark.django_db(transaction=True)
async def test_async_twins(user_factory):
    from asgiref.sync import sync_to_async

    user = await sync_to_async(user_factory)()
    await RateLimit.objects.acreate(scope="default", concurrent_streams=1)

    assert (await limits.aeffective_limits(user)).concurrent_streams == 1
    running = await limits.areserve(user, **{**SEND, "source": "websocket"})
    with pytest.raises(limits.LimitExceeded):
        await limits.areserve(user, **SEND)
    await limits.arenew(running)
    await limits.asettle(running, prompt_tokens=10, completion_tokens=20, cost=None)
    await limits.asettle(running, prompt_tokens=99, completion_tokens=99, cost=None)
    again = await limits.areserve(user, **SEND)
    await limits.arelease(again)
    assert await limits.areap_expired() == 0

    used = await limits.aconsumption(user)
    assert (used["requests_per_minute"], used["tokens_per_day"]) == (1, 30)
    assert await Usage.objects.filter(outcome="refused").acount() == 1
    # The database thread's connection would outlive the test (and keep PostgreSQL's test
    # database busy at teardown).
    await sync_to_async(connections.close_all)()
