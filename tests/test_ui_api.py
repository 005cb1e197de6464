"""The chat page's HTTP side: the page itself and the JSON API behind it (no browser).

Session auth, CSRF on unsafe methods (WS-25), another user's conversation answered exactly like a
missing one, JSON errors with a stable code. These touch the ORM: they run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from streamchat.conf import DEFAULTS
from streamchat.models import ChatModel, Conversation, Message, Usage

pytestmark = pytest.mark.django_db

LIST_URL = "/chat/api/conversations/"


def detail_url(pk: int) -> str:
    return f"/chat/api/conversations/{pk}/"


@pytest.fixture
def client_for(user_factory: Any) -> Any:
    """A logged-in client that enforces CSRF like a browser would; ``.csrf`` is its token."""

    def make(user: Any = None) -> Client:
        user = user or user_factory()
        client = Client(enforce_csrf_checks=True)
        client.force_login(user)
        client.get(reverse("streamchat:chat"))  # sets the csrftoken cookie
        client.csrf = client.cookies["csrftoken"].value  # type: ignore[attr-defined]
        client.user = user  # type: ignore[attr-defined]
        return client

    return make


def at(minutes: int) -> Any:
    return timezone.now() - timedelta(minutes=minutes)


def message(
    conversation: Conversation,
    role: str,
    content: str,
    parent: Message | None = None,
    **fields: Any,
) -> Message:
    fields.setdefault("created", timezone.now())
    return Message.objects.create(
        conversation=conversation, role=role, content=content, parent=parent, **fields
    )


# --- the page ---------------------------------------------------------------------------------


def test_chat_page_redirects_anonymous_users_to_the_login_page(client: Client) -> None:
    response = client.get("/chat/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=/chat/")


def test_chat_page_has_no_inline_script_and_sends_the_csp(client_for: Any) -> None:
    client = client_for()
    response = client.get("/chat/")
    assert response.status_code == 200
    assert response["Content-Security-Policy"] == DEFAULTS["CONTENT_SECURITY_POLICY"]
    assert "img-src 'self' data:" in response["Content-Security-Policy"]
    assert "script-src 'self'" in response["Content-Security-Policy"]
    html = response.content.decode()
    for tag in re.findall(r"<script\b[^>]*>", html):
        # Either code from a static file, or a JSON data block (json_script), which never runs.
        assert " src=" in tag or 'type="application/json"' in tag, tag
    config = json.loads(
        re.search(r'id="streamchat-config" type="application/json">(.*?)</script>', html).group(1)
    )
    assert config["websocket"] == "/ws/streamchat/"
    assert config["urls"]["conversations"] == LIST_URL
    assert config["csrf_token"]


def test_csp_can_be_turned_off_for_hosts_that_send_their_own(
    client_for: Any, settings: Any
) -> None:
    settings.STREAMCHAT = {**settings.STREAMCHAT, "CONTENT_SECURITY_POLICY": None}
    response = client_for().get("/chat/")
    assert "Content-Security-Policy" not in response


@pytest.mark.parametrize(
    "base_url",
    [
        "simulator",
        "http://127.0.0.1:9/api/v1",
        "http://localhost:9/api/v1",
        "http://[::1]:9/api/v1",
    ],
)
def test_page_says_when_replies_come_from_the_simulator(
    client_for: Any, settings: Any, simulator: Any, base_url: str
) -> None:
    # Only the simulator itself (its header) gets the banner, not a loopback address as such
    # (tests/test_simulator_banner.py has a loopback imitation of OpenRouter too).
    shown = base_url == "simulator"
    base_url = simulator.base_url if shown else base_url
    settings.STREAMCHAT = {**settings.STREAMCHAT, "BASE_URL": base_url}
    html = client_for().get("/chat/").content.decode()
    assert ("local OpenRouter simulator" in html) is shown


def test_model_picker_shows_enabled_models_with_the_default_selected(client_for: Any) -> None:
    ChatModel.objects.create(model_id="openai/gpt-4o", display_name="GPT-4o", enabled=True)
    ChatModel.objects.create(model_id="anthropic/claude-3.5-sonnet", enabled=True, is_default=True)
    ChatModel.objects.create(model_id="hidden/model", enabled=False)
    html = client_for().get("/chat/").content.decode()
    options = re.findall(r'<option value="([^"]+)"( selected)?>', html)
    assert sorted(options) == sorted(
        [("anthropic/claude-3.5-sonnet", " selected"), ("openai/gpt-4o", "")]
    )


def test_conversation_url_opens_own_conversation_only(
    client_for: Any, conversation_factory: Any
) -> None:
    client = client_for()
    mine = conversation_factory(owner=client.user, title="Mine")
    theirs = conversation_factory(title="Their secret plans")
    assert "Mine" in client.get(f"/chat/c/{mine.pk}/").content.decode()
    html = client.get(f"/chat/c/{theirs.pk}/").content.decode()
    assert "Their secret plans" not in html
    assert '"conversation": null' in html


# --- models -----------------------------------------------------------------------------------


def test_models_api_falls_back_to_the_default_model_setting(client_for: Any) -> None:
    data = client_for().get("/chat/api/models/").json()
    assert data == {
        "models": [
            {"id": DEFAULTS["DEFAULT_MODEL"], "name": DEFAULTS["DEFAULT_MODEL"], "default": True}
        ],
        "default": DEFAULTS["DEFAULT_MODEL"],
        "assistants": [],  # none defined (tests/test_assistants.py)
    }


def test_models_api_lists_enabled_models_and_the_default(client_for: Any) -> None:
    ChatModel.objects.create(model_id="a/one", enabled=True)
    ChatModel.objects.create(model_id="b/two", display_name="Two", enabled=True, is_default=True)
    ChatModel.objects.create(model_id="c/off")
    data = client_for().get("/chat/api/models/").json()
    assert data["default"] == "b/two"
    assert {m["id"]: m["name"] for m in data["models"]} == {"a/one": "a/one", "b/two": "Two"}


# --- list and search --------------------------------------------------------------------------


def test_list_shows_own_conversations_by_recency(
    client_for: Any, conversation_factory: Any
) -> None:
    client = client_for()
    old = conversation_factory(owner=client.user, title="Old", updated=at(30))
    new = conversation_factory(owner=client.user, title="", updated=at(1))
    conversation_factory(title="Someone else's", updated=at(0))
    data = client.get(LIST_URL).json()
    assert [c["id"] for c in data["conversations"]] == [new.pk, old.pk]
    assert data["conversations"][0]["title"] == f"Conversation {new.pk}"
    assert data["next_offset"] is None


def test_list_pages_with_limit_and_offset(client_for: Any, conversation_factory: Any) -> None:
    client = client_for()
    made = [conversation_factory(owner=client.user, updated=at(i)) for i in range(5)]
    first = client.get(LIST_URL, {"limit": 2}).json()
    assert [c["id"] for c in first["conversations"]] == [made[0].pk, made[1].pk]
    assert first["next_offset"] == 2
    last = client.get(LIST_URL, {"limit": 2, "offset": 4}).json()
    assert [c["id"] for c in last["conversations"]] == [made[4].pk]
    assert last["next_offset"] is None
    bad = client.get(LIST_URL, {"limit": "many"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid"


def test_search_matches_titles_and_message_text_case_insensitively(
    client_for: Any, conversation_factory: Any
) -> None:
    client = client_for()
    by_title = conversation_factory(owner=client.user, title="Pelican facts", updated=at(3))
    by_text = conversation_factory(owner=client.user, title="Birds", updated=at(2))
    message(by_text, "user", "Tell me about PELICANS please")
    neither = conversation_factory(owner=client.user, title="Cats", updated=at(1))
    message(neither, "user", "meow")
    other = conversation_factory(title="pelican")  # another user's: never found
    message(other, "user", "pelican")
    data = client.get(LIST_URL, {"q": "pelican"}).json()
    assert [c["id"] for c in data["conversations"]] == [by_text.pk, by_title.pk]
    assert client.get(LIST_URL, {"q": "no such words"}).json()["conversations"] == []


def test_list_marks_conversations_with_a_streaming_reply(
    client_for: Any, conversation_factory: Any
) -> None:
    client = client_for()
    conversation = conversation_factory(owner=client.user)
    question = message(conversation, "user", "hi")
    message(conversation, "assistant", "Hel", parent=question, status=Message.Status.STREAMING)
    (item,) = client.get(LIST_URL).json()["conversations"]
    assert item["streaming"] is True


# --- one conversation as a tree ---------------------------------------------------------------


def test_detail_is_a_tree_with_siblings_usage_and_status(
    client_for: Any, conversation_factory: Any
) -> None:
    client = client_for()
    conversation = conversation_factory(owner=client.user, title="Tree", model="m/one")
    t0 = timezone.now() - timedelta(minutes=10)
    question = message(conversation, "user", "Question", created=t0)
    first = message(
        conversation,
        "assistant",
        "First answer",
        parent=question,
        model="m/one",
        created=t0 + timedelta(seconds=1),
    )
    second = message(
        conversation,
        "assistant",
        "Second ánswer 🎉",
        parent=question,
        model="m/two",
        status=Message.Status.ERROR,
        error_code="stream_error",
        error_message="Provider failed",
        created=t0 + timedelta(seconds=2),
    )
    edited = message(conversation, "user", "Question, edited", created=t0 + timedelta(seconds=3))
    third = message(
        conversation,
        "assistant",
        "Thi",
        parent=edited,
        status=Message.Status.STREAMING,
        created=t0 + timedelta(seconds=4),
    )
    Usage.objects.create(
        message=first,
        user=client.user,
        prompt_tokens=10,
        completion_tokens=5,
        cost=Decimal("0.000150"),
        outcome="complete",
    )
    Usage.objects.create(
        message=second,
        user=client.user,
        prompt_tokens=10,
        completion_tokens=2,
        reasoning_tokens=1,
        cost=Decimal("0.0000125"),
        outcome="error",
    )
    Usage.objects.create(
        message=second,
        user=client.user,
        prompt_tokens=3,
        completion_tokens=1,
        cost=Decimal("0.0000005"),
        outcome="error",
    )

    data = client.get(detail_url(conversation.pk)).json()
    assert data["title"] == "Tree" and data["streaming"] is True
    by_id = {m["id"]: m for m in data["messages"]}
    assert [m["id"] for m in data["messages"]] == [
        question.pk,
        first.pk,
        second.pk,
        edited.pk,
        third.pk,
    ]
    assert by_id[question.pk]["siblings"] == [question.pk, edited.pk]
    assert by_id[question.pk]["children"] == [first.pk, second.pk]
    assert by_id[second.pk]["siblings"] == [first.pk, second.pk]
    assert by_id[first.pk]["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "reasoning_tokens": 0,
        "cost": "0.00015",
        "estimated": False,
    }
    assert by_id[second.pk]["usage"] == {
        "prompt_tokens": 13,
        "completion_tokens": 3,
        "reasoning_tokens": 1,
        "cost": "0.000013",
        "estimated": False,
    }
    assert by_id[second.pk]["error"] == {"code": "stream_error", "message": "Provider failed"}
    assert by_id[second.pk]["model"] == "m/two"
    assert (
        by_id[second.pk]["length"] == len("Second ánswer 🎉") == 15
    )  # code points, as on the websocket
    assert by_id[third.pk]["status"] == "streaming" and by_id[third.pk]["usage"] is None
    assert by_id[first.pk]["error"] is None
    assert data["current"] == third.pk


def test_empty_conversation_has_no_current_message(
    client_for: Any, conversation_factory: Any
) -> None:
    client = client_for()
    conversation = conversation_factory(owner=client.user)
    data = client.get(detail_url(conversation.pk)).json()
    assert data["messages"] == [] and data["current"] is None


# --- rename and delete ------------------------------------------------------------------------


def test_rename_needs_csrf_then_saves_without_reordering(
    client_for: Any, conversation_factory: Any
) -> None:
    """WS-25: the app's unsafe HTTP methods without a CSRF token are refused."""
    client = client_for()
    conversation = conversation_factory(owner=client.user, title="Before", updated=at(60))
    body = json.dumps({"title": "  After\n  all  "})
    refused = client.patch(detail_url(conversation.pk), body, content_type="application/json")
    assert refused.status_code == 403
    assert refused.json()["code"] == "csrf_failed"
    conversation.refresh_from_db()
    assert conversation.title == "Before"

    response = client.patch(
        detail_url(conversation.pk),
        body,
        content_type="application/json",
        HTTP_X_CSRFTOKEN=client.csrf,
    )
    assert response.status_code == 200
    assert response.json()["title"] == "After all"
    conversation.refresh_from_db()
    assert conversation.title == "After all"
    assert conversation.updated < at(59)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("not json", "bad_json"),
        ("[1]", "bad_json"),
        ('{"title": 5}', "invalid"),
        (json.dumps({"title": "x" * 201}), "invalid"),
    ],
)
def test_rename_refuses_bad_bodies(
    client_for: Any, conversation_factory: Any, body: str, code: str
) -> None:
    client = client_for()
    conversation = conversation_factory(owner=client.user, title="Same")
    response = client.patch(
        detail_url(conversation.pk),
        body,
        content_type="application/json",
        HTTP_X_CSRFTOKEN=client.csrf,
    )
    assert response.status_code == 400
    assert response.json()["code"] == code
    conversation.refresh_from_db()
    assert conversation.title == "Same"


def test_delete_needs_csrf_and_keeps_the_usage_ledger(
    client_for: Any, conversation_factory: Any
) -> None:
    client = client_for()
    conversation = conversation_factory(owner=client.user)
    reply = message(conversation, "assistant", "hi")
    Usage.objects.create(
        message=reply, user=client.user, prompt_tokens=1, completion_tokens=1, outcome="complete"
    )
    assert client.delete(detail_url(conversation.pk)).status_code == 403
    assert (
        client.delete(detail_url(conversation.pk), HTTP_X_CSRFTOKEN=client.csrf).status_code == 204
    )
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    (usage,) = Usage.objects.all()
    assert usage.message is None and usage.user == client.user


# --- the same answer for missing and foreign, JSON errors -------------------------------------


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_another_users_conversation_is_answered_like_a_missing_one(
    client_for: Any, conversation_factory: Any, method: str
) -> None:
    client = client_for()
    theirs = conversation_factory(title="Theirs")
    missing = theirs.pk + 1000
    kwargs: dict[str, Any] = {"HTTP_X_CSRFTOKEN": client.csrf}
    if method == "patch":
        kwargs.update(data=json.dumps({"title": "Mine now"}), content_type="application/json")
    foreign = getattr(client, method)(detail_url(theirs.pk), **kwargs)
    absent = getattr(client, method)(detail_url(missing), **kwargs)
    assert foreign.status_code == absent.status_code == 404
    assert (
        foreign.json() == absent.json() == {"code": "not_found", "message": "No such conversation."}
    )
    theirs.refresh_from_db()
    assert theirs.title == "Theirs"


@pytest.mark.parametrize("url", [LIST_URL, "/chat/api/conversations/1/", "/chat/api/models/"])
def test_api_answers_anonymous_users_with_json_401(client: Client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_unsupported_method_is_a_json_405(client_for: Any) -> None:
    client = client_for()
    response = client.post(LIST_URL, HTTP_X_CSRFTOKEN=client.csrf)
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert "GET" in response["Allow"]
