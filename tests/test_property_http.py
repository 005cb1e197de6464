"""Property-based pass over the HTTP inputs (hypothesis; WS-18 for the HTTP entry points), against
one live Daphne for the module with the simulator upstream: arbitrary JSON values, strings and
raw bytes in every field of the session JSON API, of the SSE endpoints (``POST api/stream/``,
following with any ``Last-Event-ID`` or ``?from=``, stopping) and of the OpenAI-compatible chat
completions (with any ``Authorization``).

Whatever arrives: never a 500 (a refusal is a 4xx in the endpoint's JSON error shape, an SSE
stream ends with ``end``, an OpenAI stream with ``[DONE]`` or an error event), never a traceback
or an error line in the server's log, another user is served throughout, and whatever was stored
renders afterwards: the chat page, the JSON API and streamchat's admin pages.
(The websocket's pass is tests/test_property_ws.py; its value strategies are reused here.)

Bounded (a few dozen examples per entry point, no deadline) so it runs in seconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_from_bytes

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from streamchat.models import ChatModel, Conversation, Message, Usage
from tests.http_helpers import Session, personal_token, session_for
from tests.servers import DaphneServer
from tests.test_property_ws import awkward_text, json_values

pytest_plugins = ["tests.http_helpers"]  # http_server: one live Daphne for the module
pytestmark = [pytest.mark.django_db(transaction=True)]

EXAMPLES = settings(
    # No shrinking: every step is a request to a live server, and shrinking a failure took
    # minutes. A failure is reported as it was drawn (and replayed first on the next run).
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SSE_TYPES = {"ack", "conversation.updated", "reply.started", "delta", "reasoning"}
SSE_TYPES |= {"reply.finished", "end"}
# The characters that break storage or rendering, drawn often (not only when a long text has one).
AWKWARD = [
    "\x00",
    "\ud800",
    "a\x00b\udfffc",
    "\u202e<b>x</b>",
    "🙂" * 20,
    " ",
    "<script>x</script>",
]
texts = st.sampled_from(AWKWARD) | awkward_text
MODELS = st.sampled_from(["simulator/echo", "openai/gpt-4o-mini", "no/such", ""]) | json_values


# -- the world the requests land in --------------------------------------------------------------


@dataclass
class World:
    server: DaphneServer
    user: Any
    session: Session
    token: str
    client: httpx.Client  # the user's session
    bystander: httpx.Client  # another user's session, which must be served throughout
    log_start: int

    def row_id(self, value: Any) -> Any:
        """``value``, or for a ``Known`` the id of a row of that kind that exists now."""
        if not isinstance(value, Known):
            return value
        mine = Message.objects.filter(conversation__owner=self.user)
        rows = {
            "conversation": Conversation.objects.filter(owner=self.user),
            "message": mine.filter(role="user"),
            "reply": mine.filter(role="assistant"),
        }[value.kind]
        ids = list(rows.order_by("pk").values_list("pk", flat=True))
        return ids[value.n % len(ids)] if ids else 1


@dataclass(frozen=True)
class Known:
    """The id of one of the user's rows of ``kind`` as they are when the request is made (the
    ``n``-th, modulo how many there are). Drawn as a number and resolved late, so what hypothesis
    draws never depends on the database (it must replay the same draws)."""

    n: int
    kind: str


def known(kind: str) -> st.SearchStrategy[Known]:
    return st.integers(min_value=0, max_value=1000).map(lambda n: Known(n, kind))


@pytest.fixture
def world(http_server: DaphneServer, simulator: Any, user_factory: Any) -> Iterator[World]:
    simulator.token_delay = 0.0
    ChatModel.objects.create(model_id="simulator/echo", enabled=True, is_default=True)
    user, other = user_factory(), user_factory()
    session, other_session = session_for(user), session_for(other)
    client = httpx.Client(base_url=http_server.url, cookies=session.cookies, timeout=20)
    bystander = httpx.Client(base_url=http_server.url, cookies=other_session.cookies, timeout=20)
    start = http_server.log_path.stat().st_size
    world = World(http_server, user, session, personal_token(user), client, bystander, start)
    yield world
    client.close()
    bystander.close()


def any_id(kind: str) -> st.SearchStrategy[Any]:
    """An id in a body: mostly one of the user's rows, else any number or any JSON value."""
    return known(kind) | known(kind) | st.integers(min_value=-3, max_value=2**64) | json_values


def path_id(kind: str) -> st.SearchStrategy[Any]:
    """An id as a URL carries it (digits): mostly one of the user's rows, else any number (also
    too large for the database)."""
    return known(kind) | known(kind) | st.integers(min_value=0, max_value=2**70)


def body_of(world: World, fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[bytes]:
    """A request body: mostly an object with any of ``fields`` (each any value); else any JSON
    value, or bytes that may not be JSON (or UTF-8) at all."""

    def encode(value: Any) -> bytes:
        return json.dumps(value, default=world.row_id).encode()

    kinds = {
        "object": st.fixed_dictionaries({}, optional=fields).map(encode),
        "json": json_values.map(encode),
        "bytes": st.binary(max_size=40),
        "text": texts.map(lambda t: t.encode("utf-8", "surrogatepass")),
    }
    pick = st.sampled_from(["object", "object", "object", "json", "bytes", "text"])
    return pick.flatmap(kinds.__getitem__)


# Printable ASCII: Daphne answers 400 itself to other header bytes, before any app code runs
# (and HTTP has no header value with whitespace around it).
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30
).map(str.strip)


def query(**values: st.SearchStrategy[bytes]) -> st.SearchStrategy[str]:
    """A query string with any bytes (percent-encoded) in the given parameters."""
    return st.fixed_dictionaries({}, optional=values).map(
        lambda d: "&".join(f"{k}={quote_from_bytes(v)}" for k, v in d.items())
    )


raw_bytes = st.sampled_from([b"\x00", b"\xed\xa0\x80", b"%", b"-1"]) | st.binary(max_size=12)
raw_bytes |= st.integers(-(2**70), 2**70).map(lambda n: str(n).encode())


# -- what every answer must be -------------------------------------------------------------------


def assert_json_error(response: httpx.Response, *, openai_shape: bool = False) -> None:
    """A refusal: never a 500; the endpoint's JSON error shape."""
    assert response.status_code != 500, response.text[:1000]
    body = response.json()
    if openai_shape:
        assert {"message", "type", "code"} <= set(body["error"]), body
    else:
        assert response.status_code < 500, response.text[:1000]
        assert isinstance(body["code"], str) and isinstance(body["message"], str), body


def read_sse(response: httpx.Response) -> list[dict[str, Any]]:
    """An SSE stream read to its end: every event is a protocol frame; the last is ``end``."""
    frames = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            frame = json.loads(line[6:])
            assert frame["type"] in SSE_TYPES, frame
            frames.append(frame)
            if frame["type"] == "end":
                return frames
    raise AssertionError(f"the stream ended without an end event: {frames[-3:]}")


def check_sse_answer(response: httpx.Response) -> list[dict[str, Any]]:
    """A stream read to its end, or a refusal in the JSON error shape; the frames received."""
    if response.status_code == 200:
        assert response.headers["content-type"].startswith("text/event-stream")
        return read_sse(response)
    response.read()
    assert_json_error(response)
    return []


def bystander_served(world: World) -> None:
    assert world.bystander.get("/chat/api/conversations/").json()["conversations"] == []


def server_log_is_clean(world: World) -> None:
    log = world.server.log_path.read_bytes()[world.log_start :].decode(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert "Internal Server Error" not in log, log[-3000:]


def render_everything(world: World, touched: set[int] | None = None) -> None:
    """The stored rows still render: the JSON API's list (through the live server), and for each
    conversation (or those ``touched``, so an example costs the same however many came before)
    its JSON, its chat page, and the admin pages of it and its rows."""
    listing = world.client.get("/chat/api/conversations/?limit=200")
    assert listing.status_code == 200, listing.text[:500]
    page = Client()
    page.force_login(world.user)
    admin = Client()
    users = get_user_model().objects
    name = f"admin-of-{world.user.pk}"
    admin.force_login(users.filter(username=name).first() or users.create_superuser(name))
    for model in (Conversation, Message, Usage):
        changelist = reverse(f"admin:streamchat_{model._meta.model_name}_changelist")
        assert admin.get(changelist).status_code == 200, changelist
    conversations = Conversation.objects.filter(owner=world.user)
    if touched is not None:
        conversations = conversations.filter(pk__in=touched)
    for conversation in conversations:
        detail = world.client.get(f"/chat/api/conversations/{conversation.pk}/")
        assert detail.status_code == 200, detail.text[:500]
        chat = page.get(reverse("streamchat:conversation", args=[conversation.pk]))
        assert chat.status_code == 200
        rows = [("conversation", conversation.pk)]
        rows += [("message", pk) for pk in conversation.messages.values_list("pk", flat=True)]
        rows += [
            ("usage", pk)
            for pk in Usage.objects.filter(message__conversation=conversation).values_list(
                "pk", flat=True
            )
        ]
        for model_name, pk in rows:
            change = admin.get(reverse(f"admin:streamchat_{model_name}_change", args=[pk]))
            assert change.status_code == 200, (model_name, pk)


# -- the session JSON API ------------------------------------------------------------------------


@EXAMPLES
@given(data=st.data())
def test_ws18_json_api_arbitrary_bodies_never_give_a_500_or_a_broken_page(world, data):
    echo = st.just("simulator/echo")  # mostly a model that is enabled: the title gets stored
    conversation_fields = {"title": texts | texts | json_values, "model": echo | echo | MODELS}
    operations = st.sampled_from(["create", "rename", "rename", "list", "detail", "delete"])
    csrf = world.session.headers | {"Content-Type": "application/json"}
    touched: set[int] = set()
    for operation in ["create", *data.draw(st.lists(operations, min_size=1, max_size=3))]:
        if operation == "create":
            body = data.draw(body_of(world, conversation_fields))
            response = world.client.post("/chat/api/conversations/new/", content=body, headers=csrf)
        elif operation == "rename":
            pk, body = (
                world.row_id(data.draw(path_id("conversation"))),
                data.draw(body_of(world, conversation_fields)),
            )
            url = f"/chat/api/conversations/{pk}/"
            response = world.client.patch(url, content=body, headers=csrf)
        elif operation == "list":
            params = data.draw(query(q=raw_bytes, limit=raw_bytes, offset=raw_bytes))
            response = world.client.get(f"/chat/api/conversations/?{params}")
        elif operation == "detail":
            pk = world.row_id(data.draw(path_id("conversation")))
            response = world.client.get(f"/chat/api/conversations/{pk}/")
        else:
            pk = world.row_id(data.draw(path_id("conversation")))
            response = world.client.delete(f"/chat/api/conversations/{pk}/", headers=csrf)
        if response.status_code >= 400:
            assert_json_error(response)
        else:
            assert response.status_code in (200, 201, 204), response.text[:500]
            if operation in ("create", "rename"):
                touched.add(response.json()["id"])
    bystander_served(world)
    server_log_is_clean(world)
    render_everything(world, touched)


# -- Server-Sent Events --------------------------------------------------------------------------


@EXAMPLES
@given(data=st.data())
def test_ws18_sse_arbitrary_bodies_and_positions_never_give_a_500_or_a_broken_page(world, data):
    frame_fields = {
        "type": st.sampled_from(["send", "regenerate", "edit"]) | json_values,
        "client_id": st.text(min_size=1, max_size=70) | json_values,
        "content": texts | json_values,
        "conversation": any_id("conversation"),
        "parent": any_id("message"),
        "reply": any_id("reply"),
        "message": any_id("message"),
        "model": MODELS,
        "temperature": st.floats(allow_nan=False) | json_values,
        "max_tokens": st.integers(min_value=-5, max_value=2**40) | json_values,
    }
    operation = data.draw(st.sampled_from(["send", "send", "follow", "stop"]))
    csrf = world.session.headers | {"Content-Type": "application/json"}
    if operation == "send":
        body = data.draw(body_of(world, frame_fields))
        with world.client.stream("POST", "/chat/api/stream/", content=body, headers=csrf) as r:
            frames = check_sse_answer(r)
        touched = {frames[0]["conversation"]} if frames else set()
    elif operation == "follow":
        url = f"/chat/api/replies/{world.row_id(data.draw(path_id('reply')))}/events/"
        position = data.draw(header_text)
        if data.draw(st.booleans()):
            header = {"Last-Event-ID": position}
            request = world.client.build_request("GET", url, headers=header)
        else:
            raw = data.draw(raw_bytes)
            request = world.client.build_request("GET", f"{url}?from={quote_from_bytes(raw)}")
        response = world.client.send(request, stream=True)
        try:
            check_sse_answer(response)
        finally:
            response.close()
    else:
        url = f"/chat/api/replies/{world.row_id(data.draw(path_id('reply')))}/stop/"
        response = world.client.post(url, headers=world.session.headers)
        if response.status_code != 204:
            assert_json_error(response)
    bystander_served(world)
    server_log_is_clean(world)
    if operation == "send":
        render_everything(world, touched)


# -- the OpenAI-compatible API -------------------------------------------------------------------


def openai_body(world: World) -> st.SearchStrategy[bytes]:
    part = st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["text", "image_url"]) | json_values,
            "text": texts | json_values,
        },
    )
    message = st.fixed_dictionaries(
        {},
        optional={
            "role": st.sampled_from(["system", "developer", "user", "assistant", "tool"])
            | json_values,
            "content": texts | st.lists(part, max_size=3) | json_values,
            "name": json_values,
        },
    )
    return body_of(
        world,
        {
            "model": MODELS,
            "messages": st.lists(message, max_size=3) | json_values,
            "stream": st.booleans() | json_values,
            "stream_options": st.fixed_dictionaries({}, optional={"include_usage": json_values})
            | json_values,
            "n": st.integers(-1, 3) | json_values,
            "tools": json_values,
            "temperature": st.floats(allow_nan=False) | json_values,
            "max_tokens": st.integers(min_value=-5, max_value=2**40) | json_values,
            "max_completion_tokens": st.integers(min_value=-5, max_value=2**40) | json_values,
        },
    )


@EXAMPLES
@given(data=st.data())
def test_ws18_openai_arbitrary_bodies_never_give_a_500_or_a_broken_page(world, data):
    authorization = data.draw(
        st.just(f"Bearer {world.token}") | st.just(f"bearer  {world.token}") | header_text
    )
    body = data.draw(openai_body(world))
    headers = {"Authorization": authorization, "Content-Type": "application/json"}
    with world.client.stream(
        "POST", "/chat/v1/chat/completions", content=body, headers=headers
    ) as r:
        if r.status_code != 200:
            r.read()
            assert_json_error(r, openai_shape=True)
        elif r.headers["content-type"].startswith("text/event-stream"):
            ended = False
            for line in r.iter_lines():
                if line == "data: [DONE]" or (line.startswith("data: ") and '"error"' in line):
                    ended = True
                    break
                if line.startswith("data: "):
                    assert json.loads(line[6:])["object"] == "chat.completion.chunk"
            assert ended, "the stream ended without [DONE] or an error event"
        else:
            r.read()
            assert r.json()["object"] == "chat.completion"
    # The personal token is the only credential there: a session cookie alone is a 401.
    assert world.client.get("/chat/v1/models").status_code == 401
    bystander_served(world)
    server_log_is_clean(world)


def test_the_stored_rows_of_every_pass_render(world):
    """The passes above render as they go; this one starts from rows stored by every entry point
    at once (with the awkward characters), so a page that only breaks on a mix is caught too."""
    csrf = world.session.headers
    for i, content in enumerate(["\x00nul", "\ud800 lone", "\u202e<b>rtl</b>", "🙂" * 50]):
        body = json.dumps({"client_id": f"mix-{i}", "content": content}).encode()
        headers = csrf | {"Content-Type": "application/json"}
        with world.client.stream("POST", "/chat/api/stream/", content=body, headers=headers) as r:
            assert r.status_code == 200
            read_sse(r)
        world.client.post(
            "/chat/api/conversations/new/",
            content=json.dumps({"title": content}).encode(),
            headers=headers,
        )
    render_everything(world)
    server_log_is_clean(world)
