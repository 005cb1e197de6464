"""Limits under real concurrency: many threads (each with its own database connection) released
together by a barrier, and a worker process killed mid-reply. Run on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections
from django.utils import timezone

from streamchat import limits
from streamchat.models import RateLimit, Reservation, Usage

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
N = 24  # parallel sends; every limit below is K = 5
K = 5
SEND = {
    "model": "openai/gpt-4o-mini",
    "prompt_tokens": 200,
    "max_tokens": 800,
    "prompt_price": Decimal("2"),
    "completion_price": Decimal("10"),
    "source": "websocket",
}
WORST = Decimal("0.0084")  # 200 × $2 + 800 × $10, per million


def race(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``n`` threads released at the same instant; results or exceptions."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = work(i)
        except BaseException as error:  # noqa: BLE001 - the test inspects it
            results[i] = error
        finally:
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a sender hung"
    return results


def send_all(user: Any, n: int = N) -> tuple[list[Reservation], list[limits.LimitExceeded]]:
    results = race(n, lambda i: limits.reserve(user, **SEND))
    unexpected = [r for r in results if not isinstance(r, Reservation | limits.LimitExceeded)]
    assert not unexpected, unexpected
    admitted = [r for r in results if isinstance(r, Reservation)]
    return admitted, [r for r in results if isinstance(r, limits.LimitExceeded)]


LIMIT_KINDS = {
    "requests_per_minute": K,
    "requests_per_day": K,
    "tokens_per_day": K * 1000,  # each send reserves 200 + 800 tokens
    "spend_per_month": WORST * K,
    "concurrent_streams": K,
}


def test_rl01_requests_per_minute_parallel_sends_admit_exactly_k(user_factory):
    RateLimit.objects.create(scope="default", requests_per_minute=K)
    alice, bob = user_factory(), user_factory()

    admitted, refusals = send_all(alice)

    assert len(admitted) == K
    assert len(refusals) == N - K
    assert {(r.code, r.limit) for r in refusals} == {("rate_limited", "requests_per_minute")}
    assert all(0 < r.retry_after <= 60 for r in refusals)
    assert Reservation.objects.filter(user=alice).count() == K
    assert Usage.objects.filter(user=alice, outcome="refused").count() == N - K
    # Another user's limit is their own.
    assert len(send_all(bob, n=K + 3)[0]) == K


@pytest.mark.parametrize("kind", list(LIMIT_KINDS))
def test_parallel_sends_admit_exactly_k_for_each_limit_kind(user, kind):
    RateLimit.objects.create(scope="default", **{kind: LIMIT_KINDS[kind]})

    admitted, refusals = send_all(user)

    assert len(admitted) == K, kind
    assert {r.limit for r in refusals} == {kind}
    assert Reservation.objects.count() == K
    assert limits.consumption(user)[kind] == LIMIT_KINDS[kind]


def test_rl02_reserved_spend_never_exceeds_the_budget_while_replies_run_and_settle(user):
    budget = WORST * 4
    RateLimit.objects.create(scope="default", spend_per_month=budget)
    seen: list[Decimal] = []
    done = threading.Event()

    def watch() -> None:
        try:
            while not done.is_set():
                seen.append(limits.consumption(user)["spend_per_month"])
                time.sleep(0.002)  # sample, leave the cores to the senders
        finally:
            connection.close()

    def reply(i: int) -> bool:
        # Each sender tries twice: replies that settle below their worst case free budget.
        admitted = 0
        for _ in range(2):
            try:
                reservation = limits.reserve(user, **SEND)
            except limits.LimitExceeded:
                continue
            admitted += 1
            limits.settle(reservation, prompt_tokens=200, completion_tokens=100, cost=None)
        return admitted

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        results = race(16, reply)
    finally:
        done.set()
        watcher.join(timeout=30)

    assert all(isinstance(r, int) for r in results), results
    assert seen and max(seen) <= budget
    settled = Reservation.objects.filter(state="settled")
    assert settled.count() == sum(results) > 4  # the released differences were used again
    assert limits.consumption(user)["spend_per_month"] <= budget


def test_rl11_concurrent_settles_of_one_reply_count_once(user):
    reservation = limits.reserve(user, **SEND)

    def finish(i: int) -> None:
        # Stop, disconnect and regenerate racing to end the same reply, from fresh copies.
        copy = Reservation.objects.get(pk=reservation.pk)
        if i % 3 == 2:
            limits.release(copy)
        else:
            limits.settle(copy, prompt_tokens=200, completion_tokens=i, cost=None)

    assert race(12, finish) == [None] * 12
    row = Reservation.objects.get()
    assert row.state in ("settled", "released")
    if row.state == "settled":
        assert row.tokens - 200 in {i for i in range(12) if i % 3 != 2}


WORKER = """
import sys, time
import django
django.setup()
from django.test import override_settings
from django.contrib.auth import get_user_model
from streamchat import limits

override_settings(STREAMCHAT={"LEASE_SECONDS": 1}).enable()
user = get_user_model().objects.get(pk=int(sys.argv[1]))
reservation = limits.reserve(user, model="m", prompt_tokens=10, max_tokens=10,
                             prompt_price=None, completion_price=None, source="python")
limits.renew(reservation)  # an engine renewing its lease at each checkpoint
print(reservation.pk, flush=True)
time.sleep(120)  # streaming, until it is killed
"""


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    host, port = db["HOST"] or "127.0.0.1", db["PORT"] or 5432
    return f"postgres://{db['USER'] or 'postgres'}@{host}:{port}/{db['NAME']}"


def test_rl04_a_killed_worker_does_not_block_its_user_for_longer_than_its_lease(user):
    RateLimit.objects.create(scope="default", concurrent_streams=1)
    connections.close_all()  # the worker must see the committed user, nothing held open
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "orchat_site.settings",
        "DATABASE_URL": _database_url(),
        "PYTHONPATH": str(ROOT),
    }
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(user.pk)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = worker.stdout.readline() if worker.stdout else ""
        assert line.strip().isdigit(), worker.stderr.read() if worker.stderr else line
        worker.send_signal(signal.SIGKILL)  # killed after reserve, before settle
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    orphan = Reservation.objects.get(pk=int(line))

    error = limits_refusal(user)
    assert error.limit == "concurrent_streams"
    assert error.retry_after <= 1

    wait = (orphan.expires - timezone.now()).total_seconds()
    time.sleep(max(0.0, wait) + 0.05)  # the lease running out is the event itself
    limits.reserve(user, **SEND)
    assert limits.reap_expired() == 1
    assert Reservation.objects.get(pk=orphan.pk).state == "expired"


def limits_refusal(user: Any) -> limits.LimitExceeded:
    with pytest.raises(limits.LimitExceeded) as info:
        limits.reserve(user, **SEND)
    return info.value
