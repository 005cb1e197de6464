"""The websocket's transport-level promises, through a real Daphne with the ``websockets`` client:
anonymous sockets (WS-09), sessions that end while a socket is open (WS-10), frames above the
app's and Daphne's limits (WS-12), a flood of sends (WS-20); and CSRF on the app's HTTP POSTs
(WS-25). Every socket sends the server's own Origin (WS-01 is tests/test_ws_origin.py)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.sessions.models import Session
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from websockets.exceptions import ConnectionClosed

from streamchat.models import ChatModel, Conversation, Message, RateLimit, Usage
from streamchat.simulator.replies import long_reply
from tests.live_ws import (
    asession_cookie,
    connect,
    frames,
    read_reply,
    recv_until,
    send,
)
from tests.servers import DaphneServer

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def daphne(django_db_setup, _simulator_server):
    """One Daphne for the module (default settings; the database is emptied between tests)."""
    with DaphneServer(simulator=_simulator_server) as server:
        yield server


async def closed_with(socket, timeout: float = 5) -> tuple[int | None, list[dict]]:
    """Read until the server closes: (close code, the data frames received before it)."""
    received = []
    try:
        while True:
            received.append(json.loads(await asyncio.wait_for(socket.recv(), timeout)))
    except ConnectionClosed as closed:
        return (closed.rcvd.code if closed.rcvd else None), received


async def nothing_stored() -> None:
    assert await Conversation.objects.acount() == 0
    assert await Message.objects.acount() == 0
    assert await Usage.objects.acount() == 0


# -- WS-09 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cookie", [None, "sessionid=not-a-session", "sessionid="])
async def test_ws09_anonymous_socket_accepted_then_closed_4401_without_data(
    daphne, simulator, cookie
):
    socket = await connect(daphne, cookie, hello=False)
    code, received = await closed_with(socket)
    assert code == 4401 and received == []
    await nothing_stored()
    assert simulator.chat_requests == []


# -- WS-10 ---------------------------------------------------------------------------------------


def _log_out(user, client):
    client.logout()


def _change_password(user, client):
    user.set_password("another-pass-5678")
    user.save()


def _deactivate(user, client):
    user.is_active = False
    user.save()


def _expire(user, client):
    key = client.cookies["sessionid"].value
    Session.objects.filter(session_key=key).update(expire_date=timezone.now() - timedelta(1))


@pytest.mark.parametrize("end_session", [_log_out, _change_password, _deactivate, _expire])
async def test_ws10_session_ended_while_open_then_send(daphne, simulator, user, end_session):
    client = Client()
    await sync_to_async(client.force_login)(user)
    socket = await connect(daphne, f"sessionid={client.cookies['sessionid'].value}")
    await send(socket, {"type": "ping"})
    assert (await recv_until(socket, "pong"))["type"] == "pong"

    await sync_to_async(end_session)(user, client)
    await send(socket, {"type": "send", "client_id": "after", "content": "Still there?"})
    code, received = await closed_with(socket)
    assert [f["code"] for f in received] == ["auth_expired"], received
    assert code == 4401
    await nothing_stored()
    assert simulator.chat_requests == []


# -- WS-12 ---------------------------------------------------------------------------------------


async def test_ws12_above_the_app_limit_below_daphnes_keeps_the_socket(daphne, simulator, user):
    socket = await connect(daphne, await asession_cookie(user))
    content = "x" * (70 * 1024)  # above MAX_FRAME_BYTES (64 KiB), below Daphne's 1 MiB
    await send(socket, {"type": "send", "client_id": "big", "content": content})
    error = await recv_until(socket, "error")
    assert error["code"] == "message_too_large" and "65536 bytes" in error["message"]
    await send(socket, {"type": "ping"})
    await recv_until(socket, "pong")
    await nothing_stored()
    assert simulator.chat_requests == []
    await socket.close()


async def test_ws12_above_daphnes_limit_drops_that_socket_only(daphne, simulator, user_factory):
    simulator.token_delay = 0.004
    model = "simulator/long?tokens=300"
    await ChatModel.objects.acreate(model_id=model, enabled=True, is_default=True)
    streaming_user, attacker = (
        await sync_to_async(user_factory)(),
        await sync_to_async(user_factory)(),
    )
    streamer = await connect(daphne, await asession_cookie(streaming_user))
    bystander = await connect(daphne, await asession_cookie(streaming_user))
    await send(streamer, {"type": "send", "client_id": "long", "content": "Go on"})
    ack = await recv_until(streamer, "ack")
    first = await recv_until(streamer, "delta")

    big = await connect(daphne, await asession_cookie(attacker))
    await big.send(json.dumps({"type": "send", "client_id": "huge", "content": "y" * (1 << 20)}))
    code, received = await closed_with(big)
    # Daphne's transport (autobahn) drops the connection: no close frame, or 1009 "too big".
    assert code in (None, 1009) and received == []

    text, finished = await read_reply(streamer, ack["reply"], known=first["text"])
    assert finished["status"] == "complete" and text == long_reply(300)
    await send(bystander, {"type": "ping"})
    await recv_until(bystander, "pong")
    assert await Message.objects.filter(client_message_id="huge").acount() == 0
    await streamer.close()
    await bystander.close()


# -- WS-20 ---------------------------------------------------------------------------------------


async def test_ws20_flood_of_sends_on_one_socket_admits_exactly_the_limit(daphne, simulator, user):
    k, n = 3, 25
    await RateLimit.objects.acreate(scope="default", requests_per_minute=k)
    socket = await connect(daphne, await asession_cookie(user))
    for i in range(n):  # as fast as the socket takes them, without waiting for answers
        await send(socket, {"type": "send", "client_id": f"flood-{i}", "content": f"Flood {i}"})
    acks, refusals, finished = [], [], []
    async for frame in frames(socket):
        if frame["type"] == "ack":
            acks.append(frame)
        elif frame["type"] == "error":
            refusals.append(frame)
        elif frame["type"] == "reply.finished":
            finished.append(frame)
        if len(acks) + len(refusals) == n and len(finished) == len(acks):
            break
    assert len(acks) == k and len(refusals) == n - k
    assert {r["code"] for r in refusals} == {"rate_limited"}
    assert all(0 < r["retry_after"] <= 60 for r in refusals), refusals
    assert sorted(r["client_id"] for r in refusals) == sorted(
        f"flood-{i}" for i in range(n) if f"flood-{i}" not in {a["client_id"] for a in acks}
    )
    assert {f["status"] for f in finished} == {"complete"}
    assert len(simulator.chat_requests) == k
    assert await Message.objects.acount() == 2 * k
    assert await Usage.objects.filter(outcome="refused").acount() == n - k
    await socket.close()


# -- WS-25 ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_ws25_the_apps_unsafe_http_methods_need_the_csrf_token(user, conversation_factory):
    conversation = conversation_factory(owner=user, title="Mine")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get(reverse("streamchat:chat"))  # the page sets the csrftoken cookie
    url = reverse("streamchat:api-conversation", args=[conversation.pk])
    body = json.dumps({"title": "Renamed"})
    for method, kwargs in (
        (client.patch, {"data": body, "content_type": "application/json"}),
        (client.delete, {}),
        (client.post, {"data": body, "content_type": "application/json"}),
    ):
        refused = method(url, **kwargs)
        assert refused.status_code == 403, (method, refused.content)
        assert refused.json()["code"] == "csrf_failed"
    # A token from another session does not pass either.
    other = Client(enforce_csrf_checks=True)
    other.get(reverse("login"))
    foreign = other.cookies["csrftoken"].value
    refused = client.patch(url, body, content_type="application/json", HTTP_X_CSRFTOKEN=foreign)
    assert refused.status_code == 403
    conversation.refresh_from_db()
    assert conversation.title == "Mine"
    token = client.cookies["csrftoken"].value
    allowed = client.patch(url, body, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert allowed.status_code == 200
