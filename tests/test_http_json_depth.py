"""JSON bodies of any nesting depth over HTTP (issue 15; reliability.md WS-14/WS-18 for the HTTP
front ends): the session JSON API, Server-Sent Events (``POST api/stream/``) and the
OpenAI-compatible API all read bodies with ``parse_json_body``. A body nested too deeply to parse
(``RecursionError``, not a ``ValueError``) is a 400 ``bad_json`` in the endpoint's error shape,
never a 500; nothing is stored; the server log has no traceback. Through one live Daphne."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamchat.models import Conversation, Message
from tests.http_helpers import personal_token, session_for

pytestmark = [pytest.mark.django_db(transaction=True)]

pytest_plugins = ["tests.http_helpers"]  # http_server: one live Daphne for the module


def body(shape: str, depth: int) -> bytes:
    if shape == "open":
        return b"[" * depth
    if shape == "array":
        return b"[" * depth + b"]" * depth
    if shape == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return (
        b'{"type":"send","client_id":"d","content":"hi","model":'
        + b"[" * depth
        + b"]" * depth
        + b"}"
    )


@pytest.fixture
def clients(http_server: Any, user: Any) -> Any:
    session = session_for(user)
    token = personal_token(user)
    with (
        httpx.Client(base_url=http_server.url, cookies=session.cookies, timeout=20) as browser,
        httpx.Client(base_url=http_server.url, timeout=20) as sdk,
    ):
        yield {
            "json": (browser, "/chat/api/conversations/new/", session.headers),
            "sse": (browser, "/chat/api/stream/", session.headers),
            "openai": (sdk, "/chat/v1/chat/completions", {"Authorization": f"Bearer {token}"}),
        }


def post(clients: Any, endpoint: str, content: bytes) -> httpx.Response:
    client, url, headers = clients[endpoint]
    return client.post(
        url, content=content, headers={**headers, "Content-Type": "application/json"}
    )


def code_of(endpoint: str, response: httpx.Response) -> str:
    data = response.json()
    return data["error"]["code"] if endpoint == "openai" else data["code"]


def log_is_clean(server: Any, start: int) -> None:
    log = server.log_path.read_bytes()[start:].decode(errors="replace")
    assert "Traceback" not in log and "RecursionError" not in log, log[-3000:]
    assert "Internal Server Error" not in log, log[-3000:]


@pytest.mark.parametrize("endpoint", ["json", "sse", "openai"])
@pytest.mark.parametrize("shape", ["open", "array", "object", "nested-field"])
def test_a_body_nested_too_deeply_is_400_bad_json(
    http_server: Any, clients: Any, endpoint: str, shape: str
) -> None:
    start = http_server.log_path.stat().st_size
    for depth in (1000, 1001, 10_000):
        response = post(clients, endpoint, body(shape, depth))
        assert response.status_code == 400, response.text[:500]
        assert code_of(endpoint, response) == "bad_json"
    assert Conversation.objects.count() == Message.objects.count() == 0
    log_is_clean(http_server, start)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    endpoint=st.sampled_from(["json", "sse", "openai"]),
    shape=st.sampled_from(["open", "array", "object", "nested-field"]),
    depth=st.integers(1, 30_000) | st.integers(900, 1100),
)
def test_property_any_depth_is_a_json_refusal_never_a_500(
    http_server: Any, clients: Any, endpoint: str, shape: str, depth: int
) -> None:
    start = http_server.log_path.stat().st_size
    content = body(shape, depth)
    response = post(clients, endpoint, content)
    assert response.status_code < 500, response.text[:500]
    if endpoint != "openai" and len(content) > 64 * 1024:  # MAX_FRAME_BYTES decides first
        assert response.status_code == 413 and code_of(endpoint, response) == "message_too_large"
    elif depth >= 2000 or shape == "open":
        assert response.status_code == 400 and code_of(endpoint, response) == "bad_json"
    # (Shallow enough to parse, it is answered as any body of that shape: refused for a field,
    # or, for a conversation without a title, created.)
    log_is_clean(http_server, start)
