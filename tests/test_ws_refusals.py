"""Bad frames and too many sockets (issue 15; reliability.md WS-14, WS-18, WS-22):

- JSON of any nesting depth is answered with an error frame (``bad_json`` when too deep to
  parse), the socket kept, no traceback: a property over depths and shapes, in process and
  through a real Daphne;
- malformed frames are refused before any database work, so a flood of them is answered one by
  one, in order, and a ``ping`` or ``stop`` behind it is answered next (counted in statements and
  frame order, never in time); refusals stay rate-limited in the log;
- ``MAX_SOCKETS_PER_USER``: the socket above the cap is accepted and closed 4429 with no data
  frame; another user is unaffected; closing one frees a slot.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.sessions.models import Session
from django.db import connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from streamchat import consumers
from streamchat.models import Message
from streamchat.simulator.replies import long_reply
from streamchat.streaming.hub import get_hub
from tests.db_statements import StatementLog
from tests.live_ws import asession_cookie, connect, recv_until, send
from tests.servers import DaphneServer

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _upstream(simulator_settings: Any) -> Any:
    consumers.refusal_log._windows.clear()  # each test starts with a fresh log allowance
    return simulator_settings


def raw(socket: Any, text: str) -> Any:
    return socket.communicator.send_input({"type": "websocket.receive", "text": text})


async def pong_after_errors(socket: Any, timeout: float = 10) -> list[dict[str, Any]]:
    """Ping, then read every frame up to the pong."""
    await socket.send({"type": "ping"})
    received = []
    while (frame := await socket.recv(timeout))["type"] != "pong":
        received.append(frame)
    return received


def traceback_free(caplog: Any) -> None:
    # asyncio's own records are left out: the garbage collector reports other tests' leftover
    # tasks and clients there, in whichever test runs at the time.
    ours = [r for r in caplog.records if r.name != "asyncio"]
    assert not [r for r in ours if r.exc_info or r.levelno >= logging.ERROR], caplog.text[-2000:]


# -- any nesting depth (WS-14) -------------------------------------------------------------------


def shaped(shape: str, depth: int) -> tuple[str, str]:
    """A frame nested ``depth`` deep and the code it gets when it is shallow enough to parse."""
    if shape == "open":  # never closed: not JSON at any depth
        return "[" * depth, "bad_json"
    if shape == "array":  # valid JSON, but not an object
        return "[" * depth + "]" * depth, "bad_json"
    if shape == "object":  # an object without a type
        return '{"a":' * depth + "1" + "}" * depth, "unknown_type"
    # a send whose content is nested: a field of the wrong shape
    nested = "[" * depth + "]" * depth
    return '{"type":"send","client_id":"d","content":' + nested + "}", "invalid"


def expected(shape: str, depth: int) -> set[str]:
    """The codes a frame may get: too deep to parse is ``bad_json``; in between (the parser's
    limit depends on the stack in use) either. Above MAX_FRAME_BYTES the size decides."""
    text, shallow = shaped(shape, depth)
    if len(text.encode()) > 64 * 1024:
        return {"message_too_large"}
    if depth <= 500:
        return {shallow}
    if depth >= 2000:
        return {"bad_json"}
    return {shallow, "bad_json"}


@pytest.mark.parametrize("shape", ["open", "array", "object", "send"])
async def test_ws14_a_thousand_brackets_and_deeper_get_bad_json_and_keep_the_socket(
    user: Any, chat_socket: Any, caplog: Any, shape: str
) -> None:
    socket = await chat_socket(user)
    for depth in (1000, 1001, 5000, 10_000, 30_000):
        text, _ = shaped(shape, depth)
        await raw(socket, text)
        error = await socket.recv()
        assert error["type"] == "error" and error["code"] in expected(shape, depth), error
    assert await pong_after_errors(socket) == []
    assert await Message.objects.acount() == 0
    traceback_free(caplog)
    await socket.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    frames=st.lists(
        st.tuples(
            st.sampled_from(["open", "array", "object", "send"]),
            st.integers(min_value=1, max_value=60_000) | st.integers(min_value=900, max_value=1100),
        ),
        min_size=1,
        max_size=5,
    )
)
async def test_ws14_property_any_depth_any_shape_is_one_error_frame(
    user: Any, chat_socket: Any, caplog: Any, frames: list[tuple[str, int]]
) -> None:
    socket = await chat_socket(user)
    for shape, depth in frames:
        await raw(socket, shaped(shape, depth)[0])
    errors = await pong_after_errors(socket)
    assert [e["type"] for e in errors] == ["error"] * len(frames)  # one answer each, in order
    for error, (shape, depth) in zip(errors, frames, strict=True):
        assert error["code"] in expected(shape, depth), (shape, depth, error)
    traceback_free(caplog)
    await socket.close()


# -- refusals before any database work -----------------------------------------------------------

# (frame, the code it is refused with, the field named): none of them needs the database.
MALFORMED: list[tuple[str, str, str | None]] = [
    ("not json", "bad_json", None),
    ("[]", "bad_json", None),
    ("[" * 1000, "bad_json", None),
    ('{"type": "launch"}', "unknown_type", "type"),
    ('{"type": 5}', "unknown_type", "type"),
    ('{"content": "no type"}', "unknown_type", "type"),
    ('{"type": "send", "client_id": "x"}', "invalid", "content"),
    ('{"type": "send", "content": "hi"}', "invalid", "client_id"),
    ('{"type": "send", "client_id": "x", "content": "hi", "temperature": 7}', "invalid", None),
    ('{"type": "send", "client_id": "x", "content": "hi", "conversation": "1"}', "invalid", None),
    ('{"type": "regenerate", "client_id": "x"}', "invalid", "reply"),
    ('{"type": "edit", "message": 0, "client_id": "x", "content": "hi"}', "invalid", "message"),
    ('{"type": "stop"}', "invalid", "reply"),
    ('{"type": "stop", "reply": "12"}', "invalid", "reply"),
    ('{"type": "resume", "reply": 1, "offset": -1}', "invalid", "offset"),
    ('{"type": "subscribe", "conversation": null}', "invalid", "conversation"),
]
FLOOD = 200


async def flood(socket: Any) -> list[tuple[str, str | None]]:
    """Send FLOOD malformed frames back to back; the (code, field) each must get, in order."""
    wanted = []
    for n in range(FLOOD):
        text, code, field = MALFORMED[n % len(MALFORMED)]
        await raw(socket, text)
        wanted.append((code, field))
    return wanted


def answers(frames: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(f["code"], f.get("field")) for f in frames if f["type"] == "error"]


def matches(got: list[tuple[str, str | None]], wanted: list[tuple[str, str | None]]) -> bool:
    return len(got) == len(wanted) and all(
        code == want_code and (want_field is None or field == want_field)
        for (code, field), (want_code, want_field) in zip(got, wanted, strict=True)
    )


async def test_ws18_a_flood_of_malformed_frames_is_refused_without_the_database_then_ping(
    user: Any, chat_socket: Any, statements: StatementLog, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="streamchat")
    socket = await chat_socket(user)  # (its login and session are database work)
    await sync_to_async(connections.close_all)()  # asgiref's thread reconnects, now counted
    statements.statements.clear()
    wanted = await flood(socket)
    refusals = [await socket.recv() for _ in range(FLOOD)]
    assert matches(answers(refusals), wanted), answers(refusals)[:20]
    assert statements.statements == []  # not one database statement for 200 refusals
    assert await pong_after_errors(socket) == []  # the ping right behind them is answered
    assert statements.statements  # its session check: the log does see database work
    # Refusals are still rate-limited in the log: 10 lines a minute per user, the rest counted.
    refused = [r for r in caplog.records if "websocket frame refused" in r.getMessage()]
    assert len(refused) == consumers.refusal_log.per_minute
    traceback_free(caplog)
    await socket.close()


async def test_ws22_a_stop_behind_a_flood_of_refusals_stops_the_reply(
    user: Any, chat_socket: Any, simulator: Any
) -> None:
    full = long_reply(400)
    simulator.next_reply(full)
    simulator.token_delay = 0.01
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "flood", "content": "Hi"})
    ack = await socket.recv_until("ack")
    reply = ack["reply"]
    received = await socket.text_of_at_least(1)
    wanted = await flood(socket)
    await socket.send({"type": "stop", "reply": reply})
    frames = []
    while True:
        frame = await socket.recv()
        frames.append(frame)
        if frame["type"] == "reply.finished" and frame["reply"] == reply:
            break
    # Every refusal answered, in order, and only then the stop's effect: the reply ends stopped.
    assert matches(answers(frames), wanted)
    last_error = max(i for i, f in enumerate(frames) if f["type"] == "error")
    assert last_error < len(frames) - 1
    for frame in frames:
        if frame["type"] == "delta" and frame["reply"] == reply:
            assert frame["offset"] == len(received)
            received += frame["text"]
    assert frames[-1]["status"] == "stopped" and frames[-1]["length"] == len(received)
    for run in list(get_hub().runs.values()):
        await asyncio.wait_for(run.done.wait(), 10)
    stored = await Message.objects.aget(pk=reply)
    assert stored.status == "stopped" and stored.content == received and len(received) < len(full)
    await socket.close()


async def test_ws10_a_malformed_frame_after_the_session_ended_is_refused_then_auth_expired(
    user: Any, chat_socket: Any
) -> None:
    socket = await chat_socket(user)
    cookie = dict(socket.communicator.scope["headers"])[b"cookie"].decode()
    key = cookie.split("sessionid=", 1)[1].split(";")[0]
    await sync_to_async(Session.objects.filter(session_key=key).delete)()
    await raw(socket, '{"type": "stop"}')  # malformed: refused as such, no database trip
    assert (await socket.recv())["code"] == "invalid"
    await socket.send({"type": "ping"})  # well formed: the session check says it ended
    assert (await socket.recv())["code"] == "auth_expired"
    closed = await socket.communicator.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4401}


# -- MAX_SOCKETS_PER_USER ------------------------------------------------------------------------


async def closed_at_once(socket: Any) -> dict[str, Any]:
    """The first thing a socket over the cap gets: its close (no data frame before it)."""
    return await socket.communicator.receive_output(timeout=5)


async def test_the_socket_above_the_cap_is_closed_4429_and_a_closed_one_frees_a_slot(
    user_factory: Any, chat_socket: Any, settings: Any
) -> None:
    settings.STREAMCHAT = {**settings.STREAMCHAT, "MAX_SOCKETS_PER_USER": 3}
    first = await sync_to_async(user_factory)()
    second = await sync_to_async(user_factory)()
    sockets = [await chat_socket(first) for _ in range(3)]  # each said hello
    over = await chat_socket(first, expect_hello=False)
    assert await closed_at_once(over) == {"type": "websocket.close", "code": 4429}
    assert consumers.open_sockets[first.pk] == 3
    # Another user is not affected.
    others = [await chat_socket(second) for _ in range(3)]
    # The sockets within the cap keep working.
    for socket in sockets:
        assert await pong_after_errors(socket) == []
    # Closing one frees one slot, and only one.
    await sockets.pop().close()
    sockets.append(await chat_socket(first))
    again = await chat_socket(first, expect_hello=False)
    assert await closed_at_once(again) == {"type": "websocket.close", "code": 4429}
    for socket in [*sockets, *others]:
        await socket.close()
    assert consumers.open_sockets[first.pk] == consumers.open_sockets[second.pk] == 0


async def test_no_cap_when_the_setting_is_none(user: Any, chat_socket: Any, settings: Any) -> None:
    settings.STREAMCHAT = {**settings.STREAMCHAT, "MAX_SOCKETS_PER_USER": None}
    sockets = [await chat_socket(user) for _ in range(25)]  # above the default of 20
    for socket in sockets:
        await socket.close()


# -- through a real Daphne -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def daphne(django_db_setup: Any, django_db_blocker: Any, _simulator_server: Any) -> Any:
    """One Daphne for the module (default settings: MAX_SOCKETS_PER_USER is 20)."""
    with django_db_blocker.unblock(), DaphneServer(simulator=_simulator_server) as server:
        yield server


def server_log_since(server: DaphneServer, start: int) -> str:
    return server.log_path.read_bytes()[start:].decode(errors="replace")


async def test_ws14_live_a_frame_of_a_thousand_brackets_keeps_the_socket(
    daphne: DaphneServer, user: Any
) -> None:
    start = daphne.log_path.stat().st_size
    socket = await connect(daphne, await asession_cookie(user))
    for text in ("[" * 1000, "[" * 50_000, '{"a":' * 3000):
        await socket.send(text)
        error = await recv_until(socket, "error")
        assert error["code"] == "bad_json"
    await send(socket, {"type": "ping"})
    await recv_until(socket, "pong")
    await socket.close()
    log = server_log_since(daphne, start)
    assert "Traceback" not in log and "RecursionError" not in log and " ERROR " not in log


async def hello_or_close(socket: Any) -> int | None:
    """None when the socket says hello; the close code when it is closed first."""
    try:
        frame = json.loads(await asyncio.wait_for(socket.recv(), 10))
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else -1
    assert frame["type"] == "hello", frame
    return None


async def test_live_per_user_socket_cap_closes_the_21st_with_4429(
    daphne: DaphneServer, user_factory: Any
) -> None:
    first = await sync_to_async(user_factory)()
    second = await sync_to_async(user_factory)()
    cookie = await asession_cookie(first)
    sockets = [await connect(daphne, cookie) for _ in range(20)]
    assert await hello_or_close(await connect(daphne, cookie, hello=False)) == 4429
    other = await connect(daphne, await asession_cookie(second))  # another user: served
    await send(other, {"type": "ping"})
    await recv_until(other, "pong")
    await sockets.pop().close()
    # The server learns of that close a moment later: until then a new socket gets 4429.
    for _ in range(100):
        socket = await connect(daphne, cookie, hello=False)
        code = await hello_or_close(socket)
        if code is None:
            sockets.append(socket)
            break
        assert code == 4429
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the freed slot was never given to a new socket")
    assert await hello_or_close(await connect(daphne, cookie, hello=False)) == 4429
    for socket in [*sockets, other]:
        await socket.close()
