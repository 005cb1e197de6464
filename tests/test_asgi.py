"""streamchat.asgi.chat_application: the host's ASGI app plus streamchat's websocket in one call.

The demo's orchat_site/asgi.py is built with it, so every real-server test runs through it; the
drop-in test runs it on a new site under runserver, Daphne and uvicorn. These cover its arguments.
"""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.handlers.asgi import ASGIHandler
from django.test import Client

from streamchat.asgi import UploadLimit, chat_application
from streamchat.streaming.shutdown import Lifespan
from tests.conftest import HOST, ORIGIN


async def host_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Stands in for the host's Django app: chat_application must route HTTP to it untouched."""


async def socket_headers(user: Any, origin: tuple[bytes, bytes] = ORIGIN) -> list[Any]:
    client = Client()
    await sync_to_async(client.force_login)(user)
    return [origin, HOST, (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())]


def test_routes_http_to_the_host_app_and_lifespan_to_the_engine() -> None:
    application = chat_application(host_app)
    # Untouched but for the attachment upload's body limit (UploadLimit passes the rest on).
    assert isinstance(application.application_mapping["http"], UploadLimit)
    assert application.application_mapping["http"].app is host_app
    assert isinstance(application.application_mapping["lifespan"], Lifespan)
    assert set(application.application_mapping) == {"http", "websocket", "lifespan"}


def test_without_an_app_it_makes_django_s_own() -> None:
    application = chat_application()
    assert isinstance(application.application_mapping["http"].app, ASGIHandler)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/ws/streamchat/", "/realtime/chat/"])
async def test_the_socket_says_hello_to_a_logged_in_user(user: Any, path: str) -> None:
    application = chat_application(host_app, websocket_path=path)
    communicator = WebsocketCommunicator(application, path, headers=await socket_headers(user))
    connected, _ = await communicator.connect()
    assert connected
    hello = await communicator.receive_json_from(timeout=5)
    assert hello["type"] == "hello"
    await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_foreign_origin_is_refused_on_a_path_of_the_host_s_choice(user: Any) -> None:
    application = chat_application(host_app, websocket_path="/realtime/chat/")
    headers = await socket_headers(user, (b"origin", b"http://evil.example"))
    communicator = WebsocketCommunicator(application, "/realtime/chat/", headers=headers)
    connected, _ = await communicator.connect()
    assert not connected
