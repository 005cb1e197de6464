"""Limits and budgets through the websocket and the reply engine (docs/limits.md): exact admission
over several sockets on two worker processes (RL-01), budgets reserved and settled by real replies
(RL-02, RL-03), one settlement per reply however it ends (RL-11), refusals that store nothing but
their record, and limits that fail closed when their store is unavailable.
The function-level cases are tests/test_limits.py and tests/test_limits_concurrency.py."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from streamchat.models import (
    ChatModel,
    Conversation,
    LimitLock,
    Message,
    RateLimit,
    Reservation,
    Usage,
)
from streamchat.simulator.replies import DEFAULT_REPLY
from streamchat.streaming.hub import get_hub
from tests.live_ws import asession_cookie, connect, frames, send, wait_for
from tests.servers import DaphneServer

pytestmark = [pytest.mark.django_db(transaction=True)]

MODEL = "openai/gpt-4o-mini"
# The simulator's prices for MODEL (USD per token), as admins enter them (USD per million).
PROMPT_PRICE, COMPLETION_PRICE = Decimal("0.15"), Decimal("0.6")


async def settle_runs() -> None:
    for run in list(get_hub().runs.values()):
        await asyncio.wait_for(run.done.wait(), 10)


async def answer(socket, client_id: str) -> dict:
    """The ack or error frame answering the send ``client_id``."""
    while True:
        frame = await socket.recv(5)
        if frame["type"] in ("ack", "error") and frame.get("client_id") == client_id:
            return frame


# -- RL-01 ---------------------------------------------------------------------------------------


@pytest.fixture
def two_workers(simulator):
    first = DaphneServer(simulator=simulator)
    try:
        second = DaphneServer(simulator=simulator)
    except Exception:
        first.stop()
        raise
    yield first, second
    first.stop()
    second.stop()


async def test_rl01_parallel_sends_over_sockets_on_two_workers_admit_exactly_k(
    user, simulator, two_workers
):
    k, sockets_per_worker, sends_per_socket = 4, 4, 3
    simulator.token_delay = 0.001
    await RateLimit.objects.acreate(scope="user", user=user, requests_per_minute=k)
    cookie = await asession_cookie(user)
    sockets = [
        await connect(worker, cookie) for worker in two_workers for _ in range(sockets_per_worker)
    ]

    async def flood(index: int, socket) -> list[dict]:
        ids = [f"s{index}-{j}" for j in range(sends_per_socket)]
        await asyncio.gather(
            *(send(socket, {"type": "send", "client_id": i, "content": f"Q {i}"}) for i in ids)
        )
        answers: dict[str, dict] = {}
        async for frame in frames(socket):
            if frame["type"] in ("ack", "error") and frame.get("client_id") in ids:
                answers[frame["client_id"]] = frame
            if len(answers) == len(ids):
                return list(answers.values())
        raise AssertionError("unreachable")

    results = await asyncio.gather(*(flood(i, s) for i, s in enumerate(sockets)))
    answers = [a for per_socket in results for a in per_socket]
    admitted = [a for a in answers if a["type"] == "ack"]
    refused = [a for a in answers if a["type"] == "error"]
    n = len(sockets) * sends_per_socket
    assert len(admitted) == k and len(refused) == n - k
    assert {r["code"] for r in refused} == {"rate_limited"}
    assert all(r["retry_after"] > 0 for r in refused)
    # Every admitted reply ends and is stored (on SQLite too, with two processes writing).
    await wait_for(
        lambda: (
            Message.objects.filter(role="assistant", status="streaming").count() == 0
            and Message.objects.filter(role="assistant").count() == k
        )
    )
    assert await Message.objects.filter(role="assistant", status="complete").acount() == k, [
        (m.status, m.error_code, m.error_message) async for m in Message.objects.all()
    ]
    assert len(simulator.chat_requests) == k  # upstream received exactly K
    assert await Usage.objects.filter(outcome="refused").acount() == n - k
    assert await Reservation.objects.acount() == k
    for socket in sockets:
        await socket.close()


# -- RL-02 / RL-03 -------------------------------------------------------------------------------


async def test_rl02_spend_budget_with_parallel_sends_through_the_engine(
    user, chat_socket, simulator_settings
):
    await ChatModel.objects.acreate(
        model_id=MODEL,
        enabled=True,
        is_default=True,
        max_tokens=50,  # sent upstream: the reply is cut there, so the worst case holds
        prompt_price=PROMPT_PRICE,
        completion_price=COMPLETION_PRICE,
    )
    worst = (5 * PROMPT_PRICE + 50 * COMPLETION_PRICE) / 1_000_000  # "Q n": 5 prompt tokens
    budget = Decimal("0.0001")  # the worst case fits 3 times, not 4
    assert 3 * worst <= budget < 4 * worst
    await RateLimit.objects.acreate(scope="user", user=user, spend_per_month=budget)
    sockets = [await chat_socket(user) for _ in range(4)]
    frames_sent = [(socket, f"b{i}-{j}") for i, socket in enumerate(sockets) for j in range(3)]
    await asyncio.gather(
        *(s.send({"type": "send", "client_id": c, "content": f"Q {c}"}) for s, c in frames_sent)
    )
    answers = [await answer(s, c) for s, c in frames_sent]
    # Σ reserved ≤ B while they run: only what fits was admitted.
    reserved = [r async for r in Reservation.objects.filter(user=user)]
    assert sum(r.reserved_cost for r in reserved) <= budget
    admitted = [a for a in answers if a["type"] == "ack"]
    assert len(admitted) == 3, answers
    assert {a["code"] for a in answers if a["type"] == "error"} == {"rate_limited"}
    await settle_runs()
    settled = [r async for r in Reservation.objects.filter(user=user)]
    assert {r.state for r in settled} == {"settled"}
    spent = sum(r.cost for r in settled)
    assert spent <= budget  # every reply stayed within its reservation here
    usage_cost = sum([u.cost async for u in Usage.objects.filter(outcome="complete")])
    assert spent == usage_cost
    for socket in sockets:
        await socket.close()


async def test_rl03_real_cost_below_the_reservation_is_released_at_once(
    user, chat_socket, simulator_settings
):
    await ChatModel.objects.acreate(
        model_id=MODEL,
        enabled=True,
        is_default=True,
        max_tokens=1000,  # reserved: far more than the reply will use
        prompt_price=PROMPT_PRICE,
        completion_price=COMPLETION_PRICE,
    )
    worst = (5 * PROMPT_PRICE + 1000 * COMPLETION_PRICE) / 1_000_000
    budget = Decimal("0.0009")  # one worst case fits, two do not
    assert worst <= budget < 2 * worst
    await RateLimit.objects.acreate(scope="user", user=user, spend_per_month=budget)
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "first", "content": "Q 1"})
    first = await answer(socket, "first")
    # While the first reply holds its worst case, a second does not fit.
    await socket.send({"type": "send", "client_id": "early", "content": "Q 2"})
    early = await answer(socket, "early")
    assert early["code"] == "rate_limited" and early["retry_after"] > 0
    seen = "".join(f["text"] for f in socket.frames if f["type"] == "delta")
    text, finished = await socket.reply(first["reply"], known=seen)
    assert text == DEFAULT_REPLY
    await settle_runs()
    reservation = await Reservation.objects.aget(user=user, state="settled")
    usage = await Usage.objects.aget(message_id=first["reply"])
    assert reservation.cost == usage.cost < reservation.reserved_cost
    # The difference is free at once: the next send fits.
    await socket.send({"type": "send", "client_id": "after", "content": "Q 3"})
    assert (await answer(socket, "after"))["type"] == "ack"
    await socket.close()


async def test_rl03_overrun_is_recorded_and_blocks_the_next_send(
    user, chat_socket, simulator_settings
):
    # Prices far below what the simulator charges: the reply costs more than was reserved.
    await ChatModel.objects.acreate(
        model_id="openai/gpt-4o",
        enabled=True,
        is_default=True,
        max_tokens=200,
        prompt_price=Decimal("0.0001"),
        completion_price=Decimal("0.0001"),
    )
    await RateLimit.objects.acreate(scope="user", user=user, spend_per_month=Decimal("0.0001"))
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "cheap", "content": "Q"})
    ack = await answer(socket, "cheap")
    _, finished = await socket.reply(ack["reply"])
    await settle_runs()
    reservation = await Reservation.objects.aget(user=user)
    assert reservation.state == "settled" and reservation.cost > reservation.reserved_cost
    assert reservation.cost == Decimal(finished["usage"]["cost"])
    await socket.send({"type": "send", "client_id": "blocked", "content": "Q again"})
    refused = await answer(socket, "blocked")
    assert refused["code"] == "rate_limited" and "Monthly budget reached" in refused["message"]
    await socket.close()


# -- RL-11 ---------------------------------------------------------------------------------------


async def test_rl11_stop_disconnect_and_regenerate_settle_each_reply_once(
    user, chat_socket, simulator, settings
):
    settings.STREAMCHAT = {
        **settings.STREAMCHAT,
        "BASE_URL": simulator.base_url,
        "API_KEY": simulator.api_key,
        "CANCEL_ON_DISCONNECT": True,
    }
    simulator.token_delay = 0.02
    await RateLimit.objects.acreate(scope="user", user=user, requests_per_day=100)
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "r1", "content": "Stop me"})
    first = await answer(socket, "r1")
    await socket.recv_until("delta")
    # Stop twice and close the socket (which stops it too) at the same moment.
    await asyncio.gather(
        socket.send({"type": "stop", "reply": first["reply"]}),
        socket.send({"type": "stop", "reply": first["reply"]}),
    )
    await socket.close()
    await settle_runs()
    other = await chat_socket(user)
    await other.send({"type": "regenerate", "reply": first["reply"], "client_id": "r2"})
    second = await answer(other, "r2")
    await other.recv_until("delta")
    await other.send({"type": "stop", "reply": second["reply"]})
    await other.send({"type": "regenerate", "reply": first["reply"], "client_id": "r2"})  # again
    again = await answer(other, "r2")
    assert again["reply"] == second["reply"]  # the same reply, not a third
    await other.reply(second["reply"])
    await settle_runs()
    for reply_id in (first["reply"], second["reply"]):
        reply = await Message.objects.aget(pk=reply_id)
        assert reply.status == "stopped"
        assert await Usage.objects.filter(message_id=reply_id).acount() == 1
    reservations = [r async for r in Reservation.objects.filter(user=user)]
    assert len(reservations) == 2 and {r.state for r in reservations} == {"settled"}
    await other.close()


# -- Refusals and an unavailable limit store ----------------------------------------------------


async def test_a_refused_send_stores_nothing_but_its_refusal_record(
    user, chat_socket, simulator_settings
):
    simulator = simulator_settings
    await RateLimit.objects.acreate(scope="user", user=user, requests_per_minute=1)
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "ok", "content": "First"})
    ack = await answer(socket, "ok")
    await socket.reply(ack["reply"])
    await settle_runs()
    before = (await Conversation.objects.acount(), await Message.objects.acount())
    for frame in (
        {"type": "send", "client_id": "new", "content": "A new conversation"},
        {
            "type": "send",
            "client_id": "old",
            "content": "In the old one",
            "conversation": ack["conversation"],
        },
        {"type": "regenerate", "client_id": "regen", "reply": ack["reply"]},
    ):
        await socket.send(frame)
        refused = await answer(socket, frame["client_id"])
        assert refused["code"] == "rate_limited", refused
    assert (await Conversation.objects.acount(), await Message.objects.acount()) == before
    refusals = [u async for u in Usage.objects.filter(outcome="refused")]
    assert len(refusals) == 3 and all(u.message_id is None for u in refusals)
    assert {u.error_code for u in refusals} == {"requests_per_minute"}
    assert await Reservation.objects.acount() == 1
    assert len(simulator.chat_requests) == 1
    await socket.close()


def _limit_store(available: bool) -> None:
    """Take the limits' lock table away (as a failing database would), or put it back."""
    table = LimitLock._meta.db_table
    names = (table, f"{table}_away") if not available else (f"{table}_away", table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"ALTER TABLE {connection.ops.quote_name(names[0])} "
            f"RENAME TO {connection.ops.quote_name(names[1])}"
        )


@pytest.mark.parametrize("fail_open", [False, True])
async def test_limits_fail_closed_when_their_store_is_unavailable(
    user, chat_socket, simulator, settings, fail_open
):
    settings.STREAMCHAT = {
        **settings.STREAMCHAT,
        "BASE_URL": simulator.base_url,
        "API_KEY": simulator.api_key,
        "LIMITS_FAIL_OPEN": fail_open,
    }
    await RateLimit.objects.acreate(scope="user", user=user, requests_per_minute=10)
    socket = await chat_socket(user)
    await sync_to_async(_limit_store)(False)
    try:
        await socket.send({"type": "send", "client_id": "x", "content": "Are limits up?"})
        reply = await answer(socket, "x")
        if fail_open:
            assert reply["type"] == "ack"
            text, _ = await socket.reply(reply["reply"])
            assert text == DEFAULT_REPLY
        else:
            assert reply["code"] == "limits_unavailable" and reply["retry_after"] > 0
            assert await Message.objects.acount() == 0
            assert simulator.chat_requests == []
        await settle_runs()
    finally:
        await sync_to_async(_limit_store)(True)
    await socket.close()


# -- A limit of 0 is off; retry_after for running replies --------------------------------------

FREE_MODEL = "mistralai/mistral-7b-instruct:free"  # the simulator charges nothing for it


@pytest.mark.parametrize(
    ("model", "prompt_price", "completion_price"),
    [
        pytest.param(FREE_MODEL, Decimal(0), Decimal(0), id="free-model"),
        pytest.param(MODEL, PROMPT_PRICE, COMPLETION_PRICE, id="priced-model"),
        pytest.param(MODEL, None, None, id="unknown-prices"),
    ],
)
@pytest.mark.parametrize(
    "field",
    [
        "requests_per_minute",
        "requests_per_day",
        "tokens_per_day",
        "spend_per_month",
        "concurrent_streams",
    ],
)
async def test_a_limit_of_zero_refuses_every_send_whatever_the_price(
    user, chat_socket, simulator_settings, field, model, prompt_price, completion_price
):
    simulator = simulator_settings
    await ChatModel.objects.acreate(
        model_id=model,
        enabled=True,
        is_default=True,
        prompt_price=prompt_price,
        completion_price=completion_price,
    )
    await RateLimit.objects.acreate(scope="user", user=user, **{field: 0})
    socket = await chat_socket(user)

    await socket.send({"type": "send", "client_id": "z", "content": "Anything free?"})
    refused = await answer(socket, "z")

    assert refused["type"] == "error" and refused["code"] == "rate_limited", refused
    assert refused.get("retry_after") is None  # waiting will not help
    assert "switched off" in refused["message"]
    assert simulator.chat_requests == []
    assert await Reservation.objects.acount() == 0
    assert [u.error_code async for u in Usage.objects.filter(outcome="refused")] == [field]
    await socket.close()


async def test_a_refusal_for_running_replies_says_to_retry_soon_not_at_the_lease(
    user, chat_socket, simulator_settings
):
    from streamchat.limits.rules import RUNNING_RETRY_AFTER

    simulator = simulator_settings
    simulator.token_delay = 0.05  # the first reply is still running when the second is sent
    await RateLimit.objects.acreate(scope="user", user=user, concurrent_streams=1)
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "run", "content": "A long one"})
    running = await answer(socket, "run")
    assert running["type"] == "ack"

    await socket.send({"type": "send", "client_id": "next", "content": "And another"})
    refused = await answer(socket, "next")

    assert refused["code"] == "rate_limited"
    # Not the lease (TOTAL_TIMEOUT + LEASE_SECONDS, or LEASE_SECONDS once renewed).
    assert refused["retry_after"] == RUNNING_RETRY_AFTER
    await socket.send({"type": "stop", "reply": running["reply"]})
    await settle_runs()
    await socket.send({"type": "send", "client_id": "after", "content": "Now?"})
    assert (await answer(socket, "after"))["type"] == "ack"
    await settle_runs()
    await socket.close()
