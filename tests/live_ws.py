"""Helpers of the security and fault tests: websocket clients of a real Daphne (``websockets``).

Every socket sends the server's own ``Origin`` unless a test is about the Origin, and a real
session cookie made with Django's test client.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import websockets
from asgiref.sync import sync_to_async
from django.test import Client

from tests.servers import DaphneServer

PATH = "/ws/streamchat/"


def session_cookie(user: Any) -> str:
    """A ``Cookie`` header value for a fresh session of ``user`` (one session per call)."""
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


async def asession_cookie(user: Any) -> str:
    return await sync_to_async(session_cookie)(user)


async def connect(
    server: DaphneServer, cookie: str | None, *, hello: bool = True, **options: Any
) -> Any:
    """An open socket to ``server`` with its own Origin; ``hello``: read the first frame."""
    headers = {"Cookie": cookie} if cookie else {}
    socket = await websockets.connect(
        f"{server.ws_url}{PATH}",
        origin=server.url,
        additional_headers=headers,
        open_timeout=10,
        **options,
    )
    if hello:
        first = json.loads(await asyncio.wait_for(socket.recv(), 10))
        assert first["type"] == "hello", first
    return socket


async def send(socket: Any, frame: dict[str, Any]) -> None:
    await socket.send(json.dumps(frame))


async def frames(socket: Any, timeout: float = 10) -> AsyncIterator[dict[str, Any]]:
    while True:
        yield json.loads(await asyncio.wait_for(socket.recv(), timeout))


async def recv_until(socket: Any, type_: str, timeout: float = 10, **match: Any) -> dict[str, Any]:
    async for frame in frames(socket, timeout):
        if frame["type"] == type_ and all(frame.get(k) == v for k, v in match.items()):
            return frame
    raise AssertionError("unreachable")


async def read_reply(
    socket: Any, reply_id: int, known: str = "", timeout: float = 10
) -> tuple[str, dict[str, Any]]:
    """Reassemble reply ``reply_id`` from its deltas (no gap, no repeat) until its finish."""
    text = known
    async for frame in frames(socket, timeout):
        if frame.get("reply") != reply_id:
            continue
        if frame["type"] == "delta":
            assert frame["offset"] <= len(text), f"gap at {frame['offset']} (have {len(text)})"
            text += frame["text"][len(text) - frame["offset"] :]
        elif frame["type"] == "reply.finished":
            return text, frame
    raise AssertionError("unreachable")


async def wait_for(predicate: Callable[[], Any], timeout: float = 10, every: float = 0.02) -> Any:
    """Poll the sync ``predicate`` (database reads) until it is truthy; its value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await sync_to_async(predicate)()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(every)
