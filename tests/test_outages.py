"""Outages of Redis and of the database under a live worker (issue 15), through proxies the tests
own (tests/tcp_proxy.py), over a real Daphne process.

- Redis away mid-reply: the reply keeps streaming to its own socket and is stored whole; the
  socket survives and works again when Redis is back; the log is not flooded.
- The database away when a reply ends: the client is told the end only once it is stored, and
  what is stored is everything the client received; a send meanwhile is refused ``unavailable``.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from django.db import connection

from streamchat.models import ChatModel, Message
from tests import servers
from tests.http_helpers import asession_for
from tests.live_ws import asession_cookie, connect, frames, recv_until, send
from tests.servers import DaphneServer
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.django_db(transaction=True)]

MODEL = "simulator/long?tokens=200"


async def read_while(socket, reply_id: int, text: str, until_chars: int) -> str:
    """Reply text from the socket until it holds ``until_chars`` characters."""
    async for frame in frames(socket, timeout=30):
        if frame.get("reply") == reply_id and frame["type"] == "delta":
            assert frame["offset"] <= len(text)
            text += frame["text"][len(text) - frame["offset"] :]
            if len(text) >= until_chars:
                return text
        assert frame["type"] != "reply.finished", frame
    raise AssertionError("unreachable")


async def read_to_end(socket, reply_id: int, text: str) -> tuple[str, dict]:
    async for frame in frames(socket, timeout=60):
        if frame.get("reply") != reply_id:
            continue
        if frame["type"] == "delta":
            assert frame["offset"] <= len(text)
            text += frame["text"][len(text) - frame["offset"] :]
        elif frame["type"] == "reply.finished":
            return text, frame
    raise AssertionError("unreachable")


async def test_redis_away_mid_reply_the_reply_streams_on_and_is_stored_whole(
    user, simulator, redis_url
):
    simulator.token_delay = 0.02  # 200 tokens: about 4 s
    await ChatModel.objects.acreate(model_id=MODEL, enabled=True, is_default=True)
    with TcpProxy(6379) as redis_proxy:
        proxied = redis_url.replace(":6379", f":{redis_proxy.port}")
        worker = DaphneServer(
            simulator=simulator,
            env={"REDIS_URL": proxied, "STREAMCHAT_LIVE_CHECKPOINT_MS": "100"},
        )
        try:
            socket = await connect(worker, await asession_cookie(user))
            await send(socket, {"type": "send", "client_id": "r", "content": "Talk"})
            ack = await recv_until(socket, "ack")
            text = await read_while(socket, ack["reply"], "", 20)
            redis_proxy.cut()
            text = await read_while(socket, ack["reply"], text, len(text) + 200)
            redis_proxy.restore()
            text, finished = await read_to_end(socket, ack["reply"], text)
            assert finished["status"] == "complete"
            reply = await Message.objects.aget(pk=ack["reply"])
            assert (reply.status, reply.content) == ("complete", text)
            # The socket outlived the outage and works.
            await send(socket, {"type": "ping"})
            assert (await recv_until(socket, "pong"))["type"] == "pong"
            await socket.close()
        finally:
            worker.stop()
        log = worker.log()
        assert "Traceback" not in log
        assert log.count("the channel layer failed") <= 10  # rate-limited, not one per tick


async def test_database_away_when_a_reply_ends_the_end_is_stored_before_it_is_told(
    user, simulator
):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL behind a proxy: runs in the PostgreSQL run (make test)")
    simulator.token_delay = 0.02
    await ChatModel.objects.acreate(model_id=MODEL, enabled=True, is_default=True)
    port = connection.settings_dict.get("PORT") or 5432
    with TcpProxy(int(port)) as database_proxy:
        url = servers.test_database_url().replace(f":{port}/", f":{database_proxy.port}/")
        worker = DaphneServer(simulator=simulator, env={"DATABASE_URL": url})
        try:
            cookie = await asession_cookie(user)
            http = await asession_for(user)
            socket = await connect(worker, cookie)
            other = await connect(worker, cookie)
            await send(socket, {"type": "send", "client_id": "d", "content": "Talk"})
            ack = await recv_until(socket, "ack")
            text = await read_while(socket, ack["reply"], "", 20)
            database_proxy.cut()
            # Meanwhile a new send is refused, clearly, and the socket stays.
            await send(other, {"type": "send", "client_id": "during", "content": "Hello?"})
            refused = await recv_until(other, "error")
            assert refused["code"] == "unavailable" and refused["retry_after"] > 0
            # The HTTP front ends answer JSON 503 with Retry-After, never an HTML 500.
            async with httpx.AsyncClient(base_url=worker.url, cookies=http.cookies) as client:
                listing = await client.get("/chat/api/conversations/")
                streamed = await client.post(
                    "/chat/api/stream/",
                    json={"type": "send", "client_id": "sse-during", "content": "Hello?"},
                    headers={**http.headers, "Origin": worker.url},
                )
            for answer in (listing, streamed):
                assert answer.status_code == 503, answer.text[:300]
                assert answer.json()["code"] == "unavailable"
                assert int(answer.headers["Retry-After"]) >= 1
            # The reply streams to its end; its finish waits for the database.
            ended = asyncio.ensure_future(read_to_end(socket, ack["reply"], text))
            # Upstream finished, and the worker's final write failed at least once.
            for _ in range(600):
                if "storing the end of reply" in worker.log():
                    break
                await asyncio.sleep(0.05)
            assert "storing the end of reply" in worker.log()
            assert not ended.done()  # not told the end while it cannot be stored
            database_proxy.restore()
            text, finished = await ended
            assert finished["status"] == "complete"
        finally:
            worker.stop()
    reply = await Message.objects.aget(pk=ack["reply"])
    assert (reply.status, reply.content) == ("complete", text)
    assert not await Message.objects.filter(client_message_id="during").aexists()


async def test_redis_away_a_reply_on_another_worker_is_followed_from_its_row_and_stop_says_why(
    user, simulator, redis_url
):
    """Two workers share Redis through a proxy; Redis goes away while a reply streams on the
    first. On the second, a stop answers ``workers_unreachable`` (clear, nothing pretends), and a
    resume follows the reply from its row's checkpoints to its end: the text matches the row."""
    simulator.token_delay = 0.02
    await ChatModel.objects.acreate(model_id=MODEL, enabled=True, is_default=True)
    with TcpProxy(6379) as redis_proxy:
        env = {
            "REDIS_URL": redis_url.replace(":6379", f":{redis_proxy.port}"),
            "STREAMCHAT_LIVE_CHECKPOINT_MS": "100",
        }
        first = DaphneServer(simulator=simulator, env=env)
        second = DaphneServer(simulator=simulator, env=env)
        try:
            cookie = await asession_cookie(user)
            socket = await connect(first, cookie)
            await send(socket, {"type": "send", "client_id": "x", "content": "Talk"})
            ack = await recv_until(socket, "ack")
            await read_while(socket, ack["reply"], "", 20)
            redis_proxy.cut()
            elsewhere = await connect(second, cookie)
            await send(elsewhere, {"type": "stop", "reply": ack["reply"]})
            refused = await recv_until(elsewhere, "error")
            assert refused["code"] == "workers_unreachable" and refused["reply"] == ack["reply"]
            await send(elsewhere, {"type": "resume", "reply": ack["reply"], "offset": 0})
            followed, finished = await read_to_end(elsewhere, ack["reply"], "")
            assert finished["status"] == "complete"
            reply = await Message.objects.aget(pk=ack["reply"])
            assert (reply.status, reply.content) == ("complete", followed)
        finally:
            redis_proxy.restore()
            first.stop()
            second.stop()

