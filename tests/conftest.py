from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from streamchat.models import Conversation
from tests.services import require_service

pytest_plugins = [
    "tests.simulator_fixtures",
    "tests.live_fixtures",
    "tests.http_helpers",
    "tests.db_statements",
]

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

_counter = itertools.count(1)


@pytest.fixture(autouse=True)
def _no_language_left_active() -> Iterator[None]:
    """A request through LocaleMiddleware in the test's own thread (Django's test client)
    activates its language there and nothing deactivates it: the next test would speak it."""
    yield
    from django.utils import translation

    translation.deactivate()


@pytest.fixture
def user_factory(db: None) -> Callable[..., Any]:
    def make(**fields: Any) -> Any:
        n = next(_counter)
        fields.setdefault("username", f"user{n}")
        password = fields.pop("password", "pass-1234-word")
        user = get_user_model().objects.create_user(password=password, **fields)
        user.raw_password = password
        return user

    return make


@pytest.fixture
def user(user_factory: Callable[..., Any]) -> Any:
    return user_factory()


@pytest.fixture
def conversation_factory(user_factory: Callable[..., Any]) -> Callable[..., Conversation]:
    def make(**fields: Any) -> Conversation:
        if "owner" not in fields:
            fields["owner"] = user_factory()
        return Conversation.objects.create(**fields)

    return make


@pytest.fixture
def redis_url() -> str:
    """The running Redis (database 15, flushed), or a clear skip outside CI."""
    require_service("Redis", "127.0.0.1", 6379)
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    client.close()
    return REDIS_URL


# -- websocket chat ------------------------------------------------------------------------------

ORIGIN = (b"origin", b"http://127.0.0.1:8000")
HOST = (b"host", b"127.0.0.1:8000")


class ChatSocket:
    """A websocket client of the demo's ASGI app (origin check and session auth included)."""

    def __init__(self, communicator: Any) -> None:
        self.communicator = communicator
        self.frames: list[dict[str, Any]] = []

    async def send(self, frame: dict[str, Any]) -> None:
        await self.communicator.send_json_to(frame)

    async def recv(self, timeout: float = 5) -> dict[str, Any]:
        frame = await self.communicator.receive_json_from(timeout=timeout)
        self.frames.append(frame)
        return frame

    async def recv_until(self, type_: str, timeout: float = 5, **match: Any) -> dict[str, Any]:
        while True:
            frame = await self.recv(timeout)
            if frame["type"] == type_ and all(frame.get(k) == v for k, v in match.items()):
                return frame

    async def recv_until_any(self, *types: str, timeout: float = 5) -> dict[str, Any]:
        """The first frame of any of ``types``."""
        while True:
            frame = await self.recv(timeout)
            if frame["type"] in types:
                return frame

    async def text_of_at_least(self, chars: int, timeout: float = 5) -> str:
        """The reply text received until it holds ``chars`` characters (a reply in progress)."""
        text = ""
        while len(text) < chars:
            frame = await self.recv(timeout)
            if frame["type"] == "delta":
                text += frame["text"]
        return text

    async def reply(
        self, reply_id: int, *, known: str = "", timeout: float = 10
    ) -> tuple[str, dict[str, Any]]:
        """Reassemble a reply from delta frames by offset (asserting no gap and no repeat) until its
        finish frame: (text, finish frame)."""
        text = known
        while True:
            frame = await self.recv(timeout)
            if frame.get("reply") != reply_id:
                continue
            if frame["type"] == "delta":
                assert frame["offset"] == len(text), (
                    f"gap or repeat at {frame['offset']} (have {len(text)})"
                )
                text += frame["text"]
            elif frame["type"] == "reply.finished":
                return text, frame

    async def close(self) -> None:
        await self.communicator.disconnect()


@pytest.fixture
def chat_socket() -> Callable[..., Any]:
    """``await chat_socket(user)``: a connected ChatSocket for ``user`` (None: anonymous).

    The socket goes through orchat_site.asgi.application with a real session cookie, as a browser's.
    """
    from channels.testing import WebsocketCommunicator

    from orchat_site.asgi import application

    sockets: list[ChatSocket] = []

    async def connect(user: Any = None, *, expect_hello: bool = True) -> ChatSocket:
        headers = [ORIGIN, HOST]
        if user is not None:
            from asgiref.sync import sync_to_async
            from django.test import Client

            client = Client()  # one session per socket: logging in another user keeps this one
            await sync_to_async(client.force_login)(user)
            cookie = f"sessionid={client.cookies['sessionid'].value}"
            headers.append((b"cookie", cookie.encode()))
        communicator = WebsocketCommunicator(application, "/ws/streamchat/", headers=headers)
        connected, _ = await communicator.connect()
        assert connected
        socket = ChatSocket(communicator)
        sockets.append(socket)
        if user is not None and expect_hello:
            hello = await socket.recv()
            assert hello["type"] == "hello" and hello["protocol"] == 1
        return socket

    return connect


@pytest.fixture(scope="session", autouse=True)
def _close_connections_of_the_async_thread(django_db_setup: None, django_db_blocker: Any) -> Any:
    """Async tests reach the ORM through asgiref's one sync thread and the engine's database
    threads; close their connections before the test database is dropped (PostgreSQL refuses to
    drop a database in use)."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    from streamchat.streaming import db

    with django_db_blocker.unblock():
        SyncToAsync.single_thread_executor.submit(connections.close_all).result()
        db.close_connections()


@pytest.fixture
def redis_workers(redis_url: str, simulator: Any) -> Any:
    """Two Daphne worker processes on the Redis channel layer, replies at 20 ms a token."""
    from tests.servers import DaphneServer

    simulator.token_delay = 0.02
    env = {"REDIS_URL": redis_url, "STREAMCHAT_LIVE_CHECKPOINT_MS": "100"}
    with (
        DaphneServer(simulator=simulator, env=env) as first,
        DaphneServer(simulator=simulator, env=env) as second,
    ):
        yield first, second
