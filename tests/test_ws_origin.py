"""WS-01: a websocket handshake from another origin is refused (403) before any app code runs."""

from __future__ import annotations

import pytest
import websockets
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from websockets.exceptions import InvalidStatus

from orchat_site.asgi import application
from streamchat.models import Message, Usage
from streamchat.origin import origin_allowed
from tests.servers import DaphneServer

HOST = "127.0.0.1:8000"


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://127.0.0.1:8000", True),
        ("http://127.0.0.1:8000/", True),
        ("HTTP://127.0.0.1:8000", True),
        ("http://127.0.0.1:8001", False),  # another port
        ("http://127.0.0.1", False),  # default port is 80
        ("https://127.0.0.1:8000", False),  # another scheme
        ("ftp://127.0.0.1:8000", False),
        ("http://127.0.0.1:8000.evil.example", False),  # Channels' parser stops at the ':'
        ("http://127.0.0.1.evil.example:8000", False),
        ("http://evil.example:8000", False),
        ("http://127.0.0.1:8000@evil.example", False),
        ("http://user@127.0.0.1:8000", False),
        ("http://127.0.0.1:8000/path", False),
        ("null", False),
        ("", False),
        (None, False),
        ("127.0.0.1:8000", False),
    ],
)
def test_ws01_origin_table(origin, allowed):
    assert origin_allowed(origin, HOST, "ws") is allowed


def test_the_host_must_be_allowed_and_wss_means_https(settings):
    settings.ALLOWED_HOSTS = ["chat.example.com"]
    assert origin_allowed("https://chat.example.com", "chat.example.com", "wss")
    assert not origin_allowed("http://chat.example.com", "chat.example.com", "wss")
    assert not origin_allowed("http://evil.example", "evil.example", "ws")  # Host not allowed
    settings.ALLOWED_HOSTS = ["*"]  # any Host, but the Origin must still be that host
    assert origin_allowed("http://anything.example", "anything.example", "ws")
    assert not origin_allowed("http://evil.example", "anything.example", "ws")


def test_csrf_trusted_origins_are_accepted_exactly(settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example.com", "https://*.example.org"]
    assert origin_allowed("https://chat.example.com", HOST, "ws")
    assert not origin_allowed("https://chat.example.com:8443", HOST, "ws")
    assert not origin_allowed("http://chat.example.com", HOST, "ws")
    assert origin_allowed("https://a.example.org", HOST, "ws")
    assert not origin_allowed("https://evilexample.org", HOST, "ws")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "origin",
    [
        b"http://evil.example",
        b"null",
        b"http://127.0.0.1:8000.evil.example",
        b"http://127.0.0.1:9999",
        None,
    ],
)
async def test_ws01_foreign_origin_with_a_valid_session_is_denied_in_process(user, origin):
    client = Client()
    await sync_to_async(client.force_login)(user)
    headers = [
        (b"host", HOST.encode()),
        (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()),
    ]
    if origin is not None:
        headers.append((b"origin", origin))
    communicator = WebsocketCommunicator(application, "/ws/streamchat/", headers=headers)
    connected, _ = await communicator.connect()
    assert not connected
    assert await Message.objects.acount() == 0 and await Usage.objects.acount() == 0


@pytest.mark.once
@pytest.mark.django_db(transaction=True)
async def test_ws01_real_daphne_answers_403(user, simulator):
    client = Client()
    await sync_to_async(client.force_login)(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    with DaphneServer(simulator=simulator) as server:
        # Daphne itself answers 400 to an Origin it cannot parse; ours answer 403.
        for origin, status in (
            ("http://evil.example", 403),
            (f"http://127.0.0.1:{server.port + 1}", 403),
            ("null", 403),
            (f"http://127.0.0.1:{server.port}.evil.example", 400),
        ):
            with pytest.raises(InvalidStatus) as refused:
                await websockets.connect(
                    f"{server.ws_url}/ws/streamchat/",
                    origin=origin,
                    additional_headers={"Cookie": cookie},
                )
            assert refused.value.response.status_code == status, origin
        async with websockets.connect(
            f"{server.ws_url}/ws/streamchat/",
            origin=server.url,
            additional_headers={"Cookie": cookie},
        ) as socket:
            assert '"hello"' in await socket.recv()
    assert not simulator.chat_requests
