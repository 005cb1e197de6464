"""Replies as Server-Sent Events from a live Daphne (httpx streaming clients, the simulator
upstream, no mocks): what streams, what is stored, following from ``Last-Event-ID``, stopping,
disconnects, and the refusals before a reply starts."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async

from streamchat.models import ChatModel, Conversation, Message, RateLimit, Usage
from streamchat.simulator.replies import DEFAULT_REPLY, long_reply
from tests.http_helpers import Event, asession_for, assemble, events
from tests.live_ws import wait_for

pytestmark = [pytest.mark.django_db(transaction=True)]

STREAM = "/chat/api/stream/"


def follow_url(reply_id: int) -> str:
    return f"/chat/api/replies/{reply_id}/events/"


def stop_url(reply_id: int) -> str:
    return f"/chat/api/replies/{reply_id}/stop/"


async def stream(
    client: httpx.AsyncClient, body: dict[str, Any], *, until: str = "end"
) -> tuple[httpx.Response, list[Event]]:
    """POST a frame to the stream endpoint (with the CSRF token) and read its events up to
    ``until``."""
    seen: list[Event] = []
    async with client.stream("POST", STREAM, json=body, headers=client.csrf) as response:
        if response.status_code != 200:
            await response.aread()
            return response, seen
        async for event in events(response):
            seen.append(event)
            if event.event == until:
                break
    return response, seen


def frames(seen: list[Event]) -> list[dict[str, Any]]:
    return [e.data for e in seen if e.event not in ("comment", "end")]


async def enable(model_id: str) -> None:
    await ChatModel.objects.acreate(model_id=model_id, enabled=True)


def upstream_ended(simulator: Any) -> bool:
    """Whether the simulator's one generation of this test has ended (sent its last piece)."""
    generations = list(simulator.state.generations.values())
    assert len(generations) == 1, generations
    return generations[0].ended_at is not None


@pytest.fixture
async def connect(http_server: Any) -> Any:
    """``await connect(user)``: an httpx client of the live server with ``user``'s session cookies
    (None: anonymous); ``client.csrf`` holds the CSRF header to send."""
    clients: list[httpx.AsyncClient] = []

    async def make(user: Any = None) -> httpx.AsyncClient:
        session = await asession_for(user) if user is not None else None
        client = httpx.AsyncClient(
            base_url=http_server.url, timeout=20, cookies=session.cookies if session else None
        )
        client.csrf = session.headers if session else {}  # type: ignore[attr-defined]
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def client(connect: Any, user: Any) -> httpx.AsyncClient:
    return await connect(user)


# -- streaming a reply -------------------------------------------------------------------------


async def test_sse_streams_each_event_as_it_happens_and_stores_what_was_streamed(
    user, simulator, client
):
    simulator.token_delay = 0.01
    seen: list[Event] = []
    # Whether the upstream generation had ended when this client got its first delta.
    upstream_ended_at_first_delta: list[bool] = []
    async with client.stream(
        "POST",
        STREAM,
        json={"type": "send", "client_id": "s1", "content": "Hello"},
        headers=client.csrf,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert "content-length" not in response.headers
        async for event in events(response):
            seen.append(event)
            if event.event == "delta" and not upstream_ended_at_first_delta:
                upstream_ended_at_first_delta.append(upstream_ended(simulator))
            if event.event == "end":
                break
    kinds = [e.event for e in seen if e.event != "comment"]
    assert kinds[:3] == ["ack", "conversation.updated", "reply.started"]
    assert kinds[-2:] == ["reply.finished", "end"]
    assert set(kinds[3:-2]) == {"delta"}
    # Not buffered: the first delta arrived while upstream was still streaming (~90 deltas).
    assert kinds.count("delta") > 1 and upstream_ended_at_first_delta == [False]
    text = assemble(frames(seen))
    assert text == DEFAULT_REPLY
    # Every event's id is the text the client holds after it.
    held = 0
    for event in seen:
        if event.event == "comment":
            continue
        if event.event == "delta":
            held = event.data["offset"] + len(event.data["text"])
        assert event.id == str(held), (event.event, event.id, held)
    ack, finished = seen[0].data, seen[-2].data
    assert finished["status"] == "complete" and finished["length"] == len(DEFAULT_REPLY)
    assert finished["usage"]["completion_tokens"] > 0
    reply = await Message.objects.aget(pk=ack["reply"])
    assert reply.content == text and reply.status == "complete"
    question = await Message.objects.aget(pk=ack["message"])
    assert question.content == "Hello" and question.client_message_id == "s1"
    usage = [u async for u in Usage.objects.filter(message=reply)]
    assert [u.source for u in usage] == ["sse"]


async def test_sse_keep_alive_comments_while_waiting_for_the_first_token(user, simulator, client):
    model = "simulator/slow-first?delay=0.8"
    await enable(model)
    _, seen = await stream(
        client, {"type": "send", "client_id": "k1", "content": "Hi", "model": model}
    )
    kinds = [e.event for e in seen]
    first_delta = kinds.index("delta")
    before = kinds[kinds.index("reply.started") : first_delta]
    assert before.count("comment") >= 2, kinds  # keep-alives every 0.2 s (tests.http_settings)
    assert {e.raw for e in seen if e.event == "comment"} == {"keep-alive"}
    assert assemble(frames(seen)) == DEFAULT_REPLY


async def test_sse_reasoning_has_its_own_offsets_and_the_id_holds_both(user, simulator, client):
    simulator.next_reply("The answer.", reasoning="Let me think it over.")
    _, seen = await stream(client, {"client_id": "r1", "content": "Why?"})
    reasoning = "".join(e.data["text"] for e in seen if e.event == "reasoning")
    assert reasoning == "Let me think it over."
    assert assemble(frames(seen)) == "The answer."
    assert seen[-1].id == f"{len('The answer.')}.{len(reasoning)}"


async def test_sse_regenerate_and_edit_stream_like_send(user, simulator, client):
    simulator.next_reply("First answer")
    _, seen = await stream(client, {"client_id": "g1", "content": "Question"})
    ack = seen[0].data
    simulator.next_reply("Second answer")
    _, regenerated = await stream(
        client, {"type": "regenerate", "client_id": "g2", "reply": ack["reply"]}
    )
    started = next(e.data for e in regenerated if e.event == "reply.started")
    assert started["parent"] == ack["message"]
    assert assemble(frames(regenerated)) == "Second answer"
    simulator.next_reply("Edited answer")
    _, edited = await stream(
        client,
        {"type": "edit", "client_id": "g3", "message": ack["message"], "content": "Better"},
    )
    assert assemble(frames(edited)) == "Edited answer"
    edit_ack = edited[0].data
    question = await Message.objects.aget(pk=edit_ack["message"])
    assert question.content == "Better" and question.parent_id is None
    assert [e.event for e in edited].count("conversation.updated") == 0  # same conversation
    assert await Conversation.objects.acount() == 1


async def test_sse_a_repeated_client_id_answers_with_the_first_reply(user, simulator, client):
    body = {"client_id": "dup", "content": "Once"}
    _, first = await stream(client, body)
    _, again = await stream(client, body)
    assert again[0].data["duplicate"] is True
    assert again[0].data["reply"] == first[0].data["reply"]
    assert "reply.started" not in [e.event for e in again]
    assert assemble(frames(again)) == assemble(frames(first)) == DEFAULT_REPLY
    assert await Message.objects.acount() == 2
    assert await Usage.objects.acount() == 1


# -- disconnects, following, stopping ----------------------------------------------------------


async def test_sse_disconnect_mid_reply_leaves_a_complete_stored_reply(user, simulator, client):
    simulator.token_delay = 0.01
    _, seen = await stream(client, {"client_id": "d1", "content": "Go"}, until="delta")
    reply_id = seen[0].data["reply"]
    # The client is gone; the reply goes on and is stored whole, with its one usage row.
    reply = await wait_for(
        lambda: Message.objects.filter(pk=reply_id).exclude(status="streaming").first()
    )
    assert reply.status == "complete" and reply.content == DEFAULT_REPLY
    assert len(assemble(frames(seen))) < len(DEFAULT_REPLY)
    assert await Usage.objects.filter(message_id=reply_id, outcome="complete").acount() == 1


async def test_sse_follow_from_last_event_id_sends_exactly_the_missing_part(
    user, simulator, client
):
    simulator.token_delay = 0.01
    _, seen = await stream(client, {"client_id": "f1", "content": "Go"}, until="delta")
    reply_id = seen[0].data["reply"]
    held = assemble(frames(seen))
    assert seen[-1].id == str(len(held))
    # Reconnect as an EventSource does: Last-Event-ID is the last id seen.
    rest: list[Event] = []
    async with client.stream(
        "GET",
        follow_url(reply_id),
        headers={"Last-Event-ID": seen[-1].id},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in events(response):
            rest.append(event)
            if event.event == "end":
                break
    assert assemble(frames(rest), known=held) == DEFAULT_REPLY
    assert rest[-2].data["status"] == "complete"
    # A finished reply: from the middle (?from= on a first request), and from its very end.
    middle = len(DEFAULT_REPLY) // 2
    for start, expected in ((str(middle), DEFAULT_REPLY[middle:]), (str(len(DEFAULT_REPLY)), "")):
        again: list[Event] = []
        async with client.stream("GET", follow_url(reply_id) + f"?from={start}") as response:
            async for event in events(response):
                again.append(event)
                if event.event == "end":
                    break
        text = assemble(frames(again), known=DEFAULT_REPLY[: int(start)])
        assert text[int(start) :] == expected
        assert [e.event for e in again if e.event != "delta"] == ["reply.finished", "end"]
    bad = await client.get(follow_url(reply_id), headers={"Last-Event-ID": "x"})
    assert bad.status_code == 400 and bad.json()["field"] == "Last-Event-ID"


async def test_sse_stop_endpoint_stops_the_reply_and_needs_csrf(user, simulator, client):
    model = "simulator/long?tokens=2000"
    await enable(model)
    simulator.token_delay = 0.01
    seen: list[Event] = []
    reply_id = None
    async with client.stream(
        "POST",
        STREAM,
        json={"client_id": "x1", "content": "Long", "model": model},
        headers=client.csrf,
    ) as response:
        async for event in events(response):
            seen.append(event)
            if event.event == "delta" and reply_id is None:
                reply_id = seen[0].data["reply"]
                refused = await client.post(stop_url(reply_id))
                assert refused.status_code == 403 and refused.json()["code"] == "csrf_failed"
                stopped = await client.post(stop_url(reply_id), headers=client.csrf)
                assert stopped.status_code == 204
            if event.event == "end":
                break
    finished = seen[-2].data
    assert finished["status"] == "stopped"
    text = assemble(frames(seen))
    assert 0 < len(text) < len(long_reply(2000))
    reply = await Message.objects.aget(pk=reply_id)
    assert reply.status == "stopped" and reply.content == text
    again = await client.post(stop_url(reply_id), headers=client.csrf)
    assert again.status_code == 404 and again.json()["code"] == "not_found"


# -- refusals ----------------------------------------------------------------------------------


async def test_another_users_reply_and_conversation_are_a_404_like_missing_ones(
    user_factory, simulator, client, connect
):
    theirs = await connect(await sync_to_async(user_factory)())
    _, seen = await stream(client, {"client_id": "o1", "content": "Private"})
    ack = seen[0].data
    missing = ack["reply"] + 1000
    answers = []
    for url, method in (
        (follow_url(ack["reply"]), "GET"),
        (follow_url(missing), "GET"),
        (stop_url(ack["reply"]), "POST"),
        (stop_url(missing), "POST"),
    ):
        response = await theirs.request(method, url, headers=theirs.csrf)
        answers.append((response.status_code, response.json()))
    assert answers[0] == answers[1] and answers[0][0] == 404
    assert answers[2] == answers[3] and answers[2][0] == 404
    for body in (
        {"client_id": "o2", "content": "Hijack", "conversation": ack["conversation"]},
        {"type": "regenerate", "client_id": "o3", "reply": ack["reply"]},
        {"type": "edit", "client_id": "o4", "message": ack["message"], "content": "Mine"},
    ):
        response, _ = await stream(theirs, body)
        assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert await Message.objects.acount() == 2


async def test_ws25_sse_and_json_api_posts_without_csrf_are_refused(user, simulator, client):
    for url, body in (
        (STREAM, {"client_id": "c1", "content": "No token"}),
        ("/chat/api/conversations/new/", {"title": "No token"}),
        (stop_url(1), None),
    ):
        for headers in ({}, {"X-CSRFToken": "x" * 32}):
            response = await client.post(url, json=body, headers=headers)
            assert response.status_code == 403, (url, response.text)
            assert response.json()["code"] == "csrf_failed"
    assert await Message.objects.acount() == 0
    assert await Conversation.objects.acount() == 0
    assert simulator.chat_requests == []


async def test_sse_refusals_answer_json_with_their_status(user, simulator, client, connect):
    anonymous = await (await connect()).post(STREAM, json={"client_id": "a", "content": "Hi"})
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "not_authenticated"
    wrong_method = await client.get(STREAM)
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"

    async def post(body: Any) -> httpx.Response:
        return await client.post(STREAM, headers=client.csrf, json=body)

    cases = [
        ({"content": "No client id"}, 400, "invalid", "client_id"),
        ({"client_id": "b", "content": ""}, 400, "invalid", "content"),
        ({"client_id": "b", "content": "x", "type": "shout"}, 400, "invalid", "type"),
        ({"client_id": "b", "content": "x", "model": "not/on"}, 400, "model_unavailable", "model"),
        ({"client_id": "b", "content": "x", "conversation": 999999}, 404, "not_found", None),
        ({"client_id": "b", "content": "x" * 40_000}, 413, "message_too_large", "content"),
    ]
    for body, status, code, field in cases:
        response = await post(body)
        assert (response.status_code, response.json()["code"]) == (status, code), body
        assert response.json().get("field") == field
    too_big = await client.post(
        STREAM,
        content=b'{"content": "' + b"x" * 70_000 + b'"}',
        headers={**client.csrf, "Content-Type": "application/json"},
    )
    assert too_big.status_code == 413 and too_big.json()["code"] == "message_too_large"
    not_json = await client.post(
        STREAM,
        content=b"[1, 2]",
        headers={**client.csrf, "Content-Type": "application/json"},
    )
    assert not_json.status_code == 400 and not_json.json()["code"] == "bad_json"
    assert simulator.chat_requests == []
    assert await Message.objects.acount() == 0


async def test_sse_busy_conversation_is_a_409(user, simulator, client):
    model = "simulator/long?tokens=2000"
    await enable(model)
    simulator.token_delay = 0.01
    async with client.stream(
        "POST",
        STREAM,
        json={"client_id": "b1", "content": "Long", "model": model},
        headers=client.csrf,
    ) as response:
        async for event in events(response):
            if event.event == "ack":
                ack = event.data
            if event.event == "delta":
                break
        busy, _ = await stream(
            client,
            {"client_id": "b2", "content": "Again", "conversation": ack["conversation"]},
        )
        assert busy.status_code == 409 and busy.json()["code"] == "busy"
        await client.post(stop_url(ack["reply"]), headers=client.csrf)


async def test_sse_limits_answer_429_with_retry_after(user, simulator, client):
    await RateLimit.objects.acreate(scope="user", user=user, requests_per_minute=1)
    ok, _ = await stream(client, {"client_id": "l1", "content": "One"})
    assert ok.status_code == 200
    refused, _ = await stream(client, {"client_id": "l2", "content": "Two"})
    assert refused.status_code == 429
    body = refused.json()
    assert body["code"] == "rate_limited" and body["retry_after"] > 0
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert len(simulator.chat_requests) == 1
    assert await Usage.objects.filter(outcome="refused", source="sse").acount() == 1
