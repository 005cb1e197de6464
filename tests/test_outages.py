"""Outages of Redis and of the database under a live worker (issue 15), through proxies the tests
own (tests/tcp_proxy.py), over a real Daphne process.

- Redis away mid-reply: the reply keeps streaming to its own socket and is stored whole; the
  socket survives and works again when Redis is back; the log is not flooded.
- The database away when a reply ends: the client is told the end only once it is stored, and
  what is stored is everything the client received; a send meanwhile is refused ``unavailable``.
"""

from __future__ import annotations

import asyncio

import pytest
from django.db import connection

from streamchat.models import ChatModel, Message
from tests import servers
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
