"""Property-based pass over the websocket's inputs (hypothesis): arbitrary JSON values and strings
in every field of every frame type, raw text and binary frames. Whatever arrives, the server answers
with protocol frames only, never a traceback; the socket keeps answering; what gets stored renders
on the chat page and in its JSON API afterwards; another user's socket stays served throughout.
Bounded (about 100 examples, no deadline) so it runs in seconds."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamchat.models import ChatModel, Conversation, Message
from streamchat.streaming.hub import get_hub

pytestmark = [pytest.mark.django_db(transaction=True)]

CLIENT_TYPES = ["send", "regenerate", "edit", "stop", "resume", "subscribe", "ping"]
SERVER_TYPES = {
    "hello",
    "ack",
    "reply.started",
    "delta",
    "reasoning",
    "reply.finished",
    "conversation.updated",
    "error",
    "pong",
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
# Text with the awkward characters: NUL, lone surrogates, control and right-to-left marks.
awkward_text = st.text(
    alphabet=st.characters(codec=None, categories=None, exclude_categories=()), max_size=60
) | st.sampled_from(["", " ", "\x00", "\ud800", "a\x00b\udfffc", "\u202e<b>x</b>", "🙂" * 20])


def ids(existing: st.SearchStrategy[int]) -> st.SearchStrategy[Any]:
    return existing | st.integers(min_value=-3, max_value=2**64) | json_values


def frame_strategy(existing: st.SearchStrategy[int]) -> st.SearchStrategy[Any]:
    fields = {
        "client_id": st.text(min_size=1, max_size=70) | json_values,
        "content": awkward_text | json_values,
        "conversation": ids(existing),
        "parent": ids(existing),
        "reply": ids(existing),
        "message": ids(existing),
        "model": st.sampled_from(["simulator/echo", "openai/gpt-4o-mini", "no/such"]) | json_values,
        "offset": st.integers(min_value=-5, max_value=2**64) | json_values,
        "temperature": st.floats(allow_nan=False) | json_values,
        "max_tokens": st.integers(min_value=-5, max_value=2**40) | json_values,
    }
    framed = st.fixed_dictionaries(
        {"type": st.sampled_from(CLIENT_TYPES) | json_values},
        optional=fields,  # type: ignore[arg-type]
    )
    raw = st.one_of(
        framed.map(lambda f: ("text", json.dumps(f))),
        json_values.map(lambda v: ("text", json.dumps(v))),
        st.text(max_size=40).map(lambda t: ("text", t)),
        st.binary(max_size=20).map(lambda b: ("bytes", b)),
    )
    return raw


@pytest.fixture
def upstream(simulator_settings, settings):
    simulator_settings.token_delay = 0.0
    settings.STREAMCHAT = {**settings.STREAMCHAT, "CHECKPOINT_MS": 100}
    ChatModel.objects.create(model_id="simulator/echo", enabled=True, is_default=True)
    return simulator_settings


def render_everything(user: Any) -> None:
    """Every page and API answer that shows the user's rows still renders."""
    client = Client()
    client.force_login(user)
    listing = client.get(reverse("streamchat:api-conversations"))
    assert listing.status_code == 200, listing.content[:500]
    for conversation in Conversation.objects.filter(owner=user):
        detail = client.get(reverse("streamchat:api-conversation", args=[conversation.pk]))
        assert detail.status_code == 200, detail.content[:500]
        json.loads(detail.content)
        page = client.get(reverse("streamchat:conversation", args=[conversation.pk]))
        assert page.status_code == 200


async def answered(socket, timeout: float = 5) -> list[dict[str, Any]]:
    """Ping, and read until the pong: every frame before it (the socket is not stuck)."""
    await socket.send({"type": "ping"})
    received = []
    while True:
        frame = await socket.recv(timeout)
        if frame.get("type") == "pong":
            return received
        received.append(frame)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_arbitrary_frames_never_break_the_socket_the_log_or_a_page(
    data, user_factory, chat_socket, upstream, caplog
):
    caplog.set_level(logging.INFO)
    user = await sync_to_async(user_factory)()
    bystander = await sync_to_async(user_factory)()
    known = [pk async for pk in Message.objects.values_list("pk", flat=True)] + [
        pk async for pk in Conversation.objects.values_list("pk", flat=True)
    ]
    existing = st.sampled_from(known) if known else st.just(1)
    frames = data.draw(st.lists(frame_strategy(existing), min_size=1, max_size=4))

    socket = await chat_socket(user)
    other = await chat_socket(bystander)
    for kind, payload in frames:
        key = "text" if kind == "text" else "bytes"
        await socket.communicator.send_input({"type": "websocket.receive", key: payload})
    received = await answered(socket)
    assert all(frame.get("type") in SERVER_TYPES for frame in received), received
    assert await answered(other) == []  # the other user is served, and sees nothing of this
    for run in list(get_hub().runs.values()):
        await asyncio.wait_for(run.done.wait(), 10)
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    await sync_to_async(render_everything)(user)
    await socket.close()
    await other.close()
