"""Helpers of the HTTP tests: a live Daphne for a whole test module, logged-in sessions with their
CSRF token, personal tokens, and a reader of Server-Sent Events (httpx, no mocks).

``http_server`` is module-scoped: one Daphne (tests.http_settings) serves every test of a module,
on the session's test database and simulator. Tests using it need
``pytest.mark.django_db(transaction=True)`` so the server sees their rows; between tests the
database is flushed, the server keeps running.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from tests.servers import DaphneServer

SETTINGS = "tests.http_settings"


@pytest.fixture(scope="module")
def http_server(
    django_db_setup: None, django_db_blocker: Any, _simulator_server: Any
) -> Iterator[DaphneServer]:
    with django_db_blocker.unblock():
        server = DaphneServer(simulator=_simulator_server, env={"DJANGO_SETTINGS_MODULE": SETTINGS})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _replies_end_before_the_flush(request: pytest.FixtureRequest) -> Iterator[None]:
    """The shared server may still be ending a test's reply (a stop just sent, a client gone):
    wait for its final write before the database is flushed under it (a TRUNCATE that meets the
    server's transaction deadlocks on PostgreSQL)."""
    if "http_server" not in request.fixturenames:
        yield
        return
    request.getfixturevalue("transactional_db")  # set up first, so flushed after this ends
    yield
    from streamchat.models import Message

    deadline = time.monotonic() + 15
    while Message.objects.filter(status=Message.Status.STREAMING).exists():
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)


@dataclass
class Session:
    """A logged-in browser session: its cookies and CSRF token (``headers`` sends it)."""

    cookies: dict[str, str]
    csrf: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-CSRFToken": self.csrf}


def session_for(user: Any) -> Session:
    client = Client()
    client.force_login(user)
    client.get("/chat/")  # sets the csrftoken cookie, as the page does
    cookies = {name: morsel.value for name, morsel in client.cookies.items()}
    return Session(cookies=cookies, csrf=cookies["csrftoken"])


async def asession_for(user: Any) -> Session:
    return await sync_to_async(session_for)(user)


def personal_token(user: Any, name: str = "test", **fields: Any) -> str:
    from streamchat.tokens import create_token

    return create_token(user, name, **fields)[1]


@dataclass
class Event:
    """One Server-Sent Event: ``data`` parsed as JSON when it is JSON."""

    event: str = "message"
    id: str | None = None
    data: Any = None
    raw: str = ""
    comments: list[str] = field(default_factory=list)


async def events(response: httpx.Response) -> AsyncIterator[Event]:
    """The events of a streaming response, as the SSE spec parses them; comments ride on the next
    event (``comments``) and also come alone as ``Event(event="comment")``."""
    current = Event()
    lines: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if lines:
                current.raw = "\n".join(lines)
                try:
                    current.data = json.loads(current.raw)
                except ValueError:
                    current.data = current.raw
                yield current
            current, lines = Event(), []
            continue
        if line.startswith(":"):
            yield Event(event="comment", raw=line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            current.event = value
        elif name == "id":
            current.id = value
        elif name == "data":
            lines.append(value)


def assemble(frames: list[dict[str, Any]], known: str = "") -> str:
    """Reply text from delta frames, asserting each starts exactly where the text ends."""
    text = known
    for frame in frames:
        if frame.get("type") == "delta":
            assert frame["offset"] == len(text), f"gap or repeat at {frame['offset']} ({len(text)})"
            text += frame["text"]
    return text
