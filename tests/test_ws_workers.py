"""Two Daphne worker processes on the Redis channel layer: a reply started in one is followed and
stopped from the other."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from asgiref.sync import sync_to_async
from django.test import Client

from streamchat.models import Message
from streamchat.simulator.replies import DEFAULT_REPLY
from tests.servers import DaphneServer

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def workers(redis_workers: Any) -> Any:
    return redis_workers


async def connect(server: DaphneServer, cookie: str):
    socket = await websockets.connect(
        f"{server.ws_url}/ws/streamchat/",
        origin=server.url,
        additional_headers={"Cookie": cookie},
        open_timeout=10,
    )
    hello = json.loads(await socket.recv())
    assert hello["type"] == "hello"
    return socket


async def frames(socket, timeout: float = 10):
    while True:
        yield json.loads(await asyncio.wait_for(socket.recv(), timeout))


async def read_reply(socket, reply_id: int, known: str = ""):
    text = known
    async for frame in frames(socket):
        if frame.get("reply") != reply_id:
            continue
        if frame["type"] == "delta":
            assert frame["offset"] == len(text), (frame["offset"], len(text))
            text += frame["text"]
        elif frame["type"] == "reply.finished":
            return text, frame


async def test_a_reply_in_one_worker_is_followed_and_stopped_from_another(user, workers):
    first, second = workers
    client = Client()
    await sync_to_async(client.force_login)(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    sender = await connect(first, cookie)
    follower = await connect(second, cookie)

    await sender.send(json.dumps({"type": "send", "client_id": "w1", "content": "Across workers"}))
    ack = None
    seen = ""
    async for frame in frames(sender):
        if frame["type"] == "ack":
            ack = frame
        if frame["type"] == "delta":
            seen += frame["text"]
            if len(seen) > 20:
                break
    await follower.send(json.dumps({"type": "resume", "reply": ack["reply"], "offset": 0}))
    followed, finished = await read_reply(follower, ack["reply"])
    assert followed == DEFAULT_REPLY and finished["status"] == "complete"
    sent, _ = await read_reply(sender, ack["reply"], known=seen)
    assert sent == DEFAULT_REPLY

    # Stop from the other worker.
    await sender.send(
        json.dumps(
            {
                "type": "send",
                "client_id": "w2",
                "content": "Stop me",
                "conversation": ack["conversation"],
            }
        )
    )
    ack2 = None
    first_delta = ""
    async for frame in frames(sender):
        if frame["type"] == "ack":
            ack2 = frame
        if frame["type"] == "delta":
            first_delta = frame["text"]
            break
    await follower.send(json.dumps({"type": "stop", "reply": ack2["reply"]}))
    text, finished = await read_reply(sender, ack2["reply"], known=first_delta)
    assert finished["status"] == "stopped", first.log()
    reply = await Message.objects.aget(pk=ack2["reply"])
    assert reply.status == "stopped" and len(reply.content) < len(DEFAULT_REPLY)
    await sender.close()
    await follower.close()
