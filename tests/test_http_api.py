"""The session JSON API as documented in docs/http.md (no browser, no live server): create, the
branch and sibling counts of one conversation, paging by recency, the status of each error code.
tests/test_ui_api.py covers what the chat page uses; these touch the ORM (SQLite and PostgreSQL).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from streamchat.exceptions import ChatError, http_status
from streamchat.http.responses import error_response
from streamchat.models import ChatModel, Conversation, Message

pytestmark = pytest.mark.django_db

CREATE_URL = "/chat/api/conversations/new/"


@pytest.fixture
def client(user: Any) -> Client:
    """A logged-in client that enforces CSRF; ``.csrf`` holds its header."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get(reverse("streamchat:chat"))
    client.csrf = {"HTTP_X_CSRFTOKEN": client.cookies["csrftoken"].value}  # type: ignore[attr-defined]
    return client


def post_json(client: Client, url: str, body: Any, **extra: Any) -> Any:
    return client.post(url, json.dumps(body), content_type="application/json", **extra)


def test_create_makes_an_empty_conversation_with_the_default_or_an_enabled_model(
    client: Client, user: Any
) -> None:
    ChatModel.objects.create(model_id="openai/gpt-4o", enabled=True, is_default=True)
    ChatModel.objects.create(model_id="openai/gpt-4o-mini", enabled=True)
    refused = post_json(client, CREATE_URL, {"title": "No token"})
    assert refused.status_code == 403 and refused.json()["code"] == "csrf_failed"

    created = post_json(client, CREATE_URL, {"title": "  Plans \n for\tMay "}, **client.csrf)
    assert created.status_code == 201
    body = created.json()
    assert body["title"] == "Plans for May" and body["model"] == "openai/gpt-4o"
    assert created["Location"] == f"/chat/api/conversations/{body['id']}/"
    assert Conversation.objects.get(pk=body["id"]).owner == user

    mini = post_json(client, CREATE_URL, {"model": "openai/gpt-4o-mini"}, **client.csrf)
    assert mini.status_code == 201 and mini.json()["model"] == "openai/gpt-4o-mini"
    assert mini.json()["title"] == f"Conversation {mini.json()['id']}"

    for body, code, field in (
        ({"model": "not/enabled"}, "model_unavailable", "model"),
        ({"title": 5}, "invalid", "title"),
        ({"title": "x" * 201}, "invalid", "title"),
    ):
        response = post_json(client, CREATE_URL, body, **client.csrf)
        assert response.status_code == 400
        assert (response.json()["code"], response.json()["field"]) == (code, field)
    assert client.get(CREATE_URL).status_code == 405
    assert Conversation.objects.count() == 2


def test_detail_names_the_current_branch_and_sibling_counts(client: Client, user: Any) -> None:
    conversation = Conversation.objects.create(owner=user, title="Tree")
    t0 = timezone.now() - timedelta(minutes=5)

    def add(role: str, parent: Message | None, seconds: int) -> Message:
        return Message.objects.create(
            conversation=conversation,
            role=role,
            content=f"{role} {seconds}",
            parent=parent,
            created=t0 + timedelta(seconds=seconds),
        )

    question = add("user", None, 0)
    first = add("assistant", question, 1)
    follow_up = add("user", first, 2)
    answer = add("assistant", follow_up, 3)
    regenerated = add("assistant", question, 4)  # the newest: a sibling of ``first``

    data = client.get(f"/chat/api/conversations/{conversation.pk}/").json()
    assert data["current"] == regenerated.pk
    assert data["branch"] == [question.pk, regenerated.pk]
    by_id = {m["id"]: m for m in data["messages"]}
    assert (by_id[first.pk]["sibling_index"], by_id[first.pk]["sibling_count"]) == (1, 2)
    assert (by_id[regenerated.pk]["sibling_index"], by_id[regenerated.pk]["sibling_count"]) == (
        2,
        2,
    )
    assert (by_id[answer.pk]["sibling_index"], by_id[answer.pk]["sibling_count"]) == (1, 1)
    assert by_id[question.pk]["sibling_count"] == 1

    empty = Conversation.objects.create(owner=user)
    assert client.get(f"/chat/api/conversations/{empty.pk}/").json()["branch"] == []


def test_list_pages_by_recency_until_next_offset_is_null(client: Client, user: Any) -> None:
    now = timezone.now()
    for n in range(5):
        Conversation.objects.create(owner=user, title=f"c{n}", updated=now - timedelta(minutes=n))
    seen: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = client.get("/chat/api/conversations/", {"limit": 2, "offset": offset}).json()
        seen += [c["title"] for c in page["conversations"]]
        offset = page["next_offset"]
    assert seen == ["c0", "c1", "c2", "c3", "c4"]


def test_a_json_body_above_the_frame_limit_is_413(client: Client, user: Any) -> None:
    conversation = Conversation.objects.create(owner=user, title="Same")
    body = json.dumps({"title": "x" * 70_000})
    response = client.patch(
        f"/chat/api/conversations/{conversation.pk}/",
        body,
        content_type="application/json",
        **client.csrf,
    )
    assert response.status_code == 413 and response.json()["code"] == "message_too_large"
    conversation.refresh_from_db()
    assert conversation.title == "Same"


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("bad_json", 400),
        ("invalid", 400),
        ("not_authenticated", 401),
        ("csrf_failed", 403),
        ("not_found", 404),
        ("busy", 409),
        ("message_too_large", 413),
        ("rate_limited", 429),
        ("limits_unavailable", 503),
    ],
)
def test_each_error_code_has_its_documented_status(code: str, status: int) -> None:
    assert http_status(code) == status
    response = error_response(ChatError(code, "Refused.", retry_after=41.2))
    assert response.status_code == status
    assert json.loads(response.content) == {
        "code": code,
        "message": "Refused.",
        "retry_after": 41.2,
    }
    assert response["Retry-After"] == "42"  # whole seconds, rounded up
