"""Export: a conversation as Markdown (its current branch) and as JSON (the whole tree, usage per
reply) from the JSON API, owner only; one user's data as JSON from the user admin (a data
request), only for staff allowed to read the chat log. No browser; these touch the ORM (SQLite
and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from streamchat.models import Conversation, Message, Usage
from streamchat.tokens import create_token

pytestmark = pytest.mark.django_db


def export_url(pk: int, kind: str | None = None) -> str:
    url = reverse("streamchat:api-conversation-export", args=[pk])
    return f"{url}?format={kind}" if kind else url


@pytest.fixture
def chat(user: Any) -> dict[str, Any]:
    """A conversation with an edited question (two branches) and a reply on each; the newest
    branch is the edit's."""
    start = timezone.now() - timedelta(hours=1)
    conversation = Conversation.objects.create(
        owner=user, title="Pelicans & <b>friends</b>", model="openai/gpt-4o"
    )

    def message(role: str, content: str, parent: Message | None, minute: int, **more: Any) -> Any:
        return Message.objects.create(
            conversation=conversation,
            role=role,
            content=content,
            parent=parent,
            created=start + timedelta(minutes=minute),
            **more,
        )

    first = message("user", "Can pelicans fly?", None, 0)
    old_reply = message("assistant", "Old answer.", first, 1, model="openai/gpt-4o")
    edit = message("user", "How far do **pelicans** fly?", None, 2)
    reply = message(
        "assistant", "Up to 150 km a day.", edit, 3, model="openai/gpt-4o", finish_reason="stop"
    )
    for row_reply, cost in ((old_reply, "0.000010"), (reply, "0.000042")):
        Usage.objects.create(
            user=user,
            message=row_reply,
            model_requested="openai/gpt-4o",
            model_used="openai/gpt-4o",
            prompt_tokens=9,
            completion_tokens=3,
            cost=Decimal(cost),
            outcome=Usage.Outcome.COMPLETE,
        )
    return {"conversation": conversation, "first": first, "old": old_reply, "reply": reply}


@pytest.fixture
def owner_client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_markdown_is_the_current_branch_with_roles_models_times_and_usage(
    owner_client: Client, chat: dict[str, Any]
) -> None:
    response = owner_client.get(export_url(chat["conversation"].pk, "md"))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"] == (
        f'attachment; filename="streamchat-{chat["conversation"].pk}-pelicans-bfriendsb.md"'
    )
    assert response["Cache-Control"] == "no-store"
    text = response.content.decode()
    assert text.startswith("# Pelicans & <b>friends</b>\n")  # a file, not HTML: as written
    assert "- Model: openai/gpt-4o" in text
    # The newest branch only, in order, each under its role (and the reply's model) with a time.
    assert "How far do **pelicans** fly?" in text and "Up to 150 km a day." in text
    assert "Can pelicans fly?" not in text and "Old answer." not in text
    assert text.index("## You · ") < text.index("## Assistant · openai/gpt-4o · ")
    when = timezone.localtime(chat["reply"].created).strftime("%Y-%m-%d %H:%M")
    assert f"## Assistant · openai/gpt-4o · {when}" in text
    assert "9 tokens in, 3 out, $0.000042" in text
    assert "version 2 of 2" in text  # the edit has a sibling, so the file says there is more


def test_json_is_the_whole_tree_with_usage_per_reply(
    owner_client: Client, chat: dict[str, Any]
) -> None:
    response = owner_client.get(export_url(chat["conversation"].pk, "json"))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"].startswith('attachment; filename="streamchat-')
    assert response["Content-Disposition"].endswith('.json"')
    data = json.loads(response.content)
    assert data["format"] == "streamchat.conversation" and data["version"] == 1
    assert data["title"] == "Pelicans & <b>friends</b>"
    by_content = {m["content"]: m for m in data["messages"]}
    # Every branch, with the links that make the tree.
    assert set(by_content) == {
        "Can pelicans fly?",
        "Old answer.",
        "How far do **pelicans** fly?",
        "Up to 150 km a day.",
    }
    assert by_content["Old answer."]["parent"] == chat["first"].pk
    assert data["branch"] == [by_content["How far do **pelicans** fly?"]["id"], chat["reply"].pk]
    old = by_content["Old answer."]
    assert old["usage"]["cost"] == "0.00001" and old["usage"]["prompt_tokens"] == 9
    [record] = by_content["Up to 150 km a day."]["usage_records"]
    assert record["model_used"] == "openai/gpt-4o" and record["cost"] == "0.000042"
    assert record["completion_tokens"] == 3 and record["outcome"] == "complete"
    assert by_content["Can pelicans fly?"]["usage_records"] == []
    # JSON is the default format.
    assert json.loads(owner_client.get(export_url(chat["conversation"].pk)).content)["id"] == (
        chat["conversation"].pk
    )


def test_only_the_owner_exports_and_others_get_a_plain_404(
    chat: dict[str, Any], user_factory: Any
) -> None:
    pk = chat["conversation"].pk
    anonymous = Client().get(export_url(pk, "md"))
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "not_authenticated"
    other = Client()
    other.force_login(user_factory())
    for kind in ("md", "json"):
        theirs, missing = other.get(export_url(pk, kind)), other.get(export_url(999999, kind))
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json() == missing.json() == {
            "code": "not_found",
            "message": "No such conversation.",
        }
        assert "Content-Disposition" not in theirs


def test_an_unknown_format_is_refused(owner_client: Client, chat: dict[str, Any]) -> None:
    response = owner_client.get(export_url(chat["conversation"].pk, "pdf"))
    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and response.json()["field"] == "format"
    assert owner_client.post(export_url(chat["conversation"].pk, "md")).status_code in (403, 405)


# --- admin: one user's data -----------------------------------------------------------------


def run_action(client: Client, *users: Any) -> Any:
    return client.post(
        reverse("admin:auth_user_changelist"),
        {"action": "export_user_data", "_selected_action": [u.pk for u in users]},
    )


def test_admin_exports_one_users_conversations_usage_and_tokens(
    admin_client: Client, user: Any, chat: dict[str, Any], user_factory: Any
) -> None:
    other = user_factory()
    Conversation.objects.create(owner=other, title="not theirs")
    create_token(user, "laptop")
    # A usage row whose conversation was deleted still belongs to the user's data.
    gone = Conversation.objects.create(owner=user, title="deleted later")
    gone_reply = Message.objects.create(conversation=gone, role="assistant", content="x")
    Usage.objects.create(user=user, message=gone_reply, outcome=Usage.Outcome.COMPLETE)
    gone.delete()
    changelist = admin_client.get(reverse("admin:auth_user_changelist")).content.decode()
    assert 'value="export_user_data"' in changelist
    response = run_action(admin_client, user)
    assert response.status_code == 200
    assert response["Content-Disposition"] == (
        f'attachment; filename="streamchat-user-{user.pk}.json"'
    )
    data = json.loads(response.content)
    assert data["format"] == "streamchat.user"
    assert data["user"]["username"] == user.get_username()
    assert [c["title"] for c in data["conversations"]] == ["Pelicans & <b>friends</b>"]
    assert len(data["conversations"][0]["messages"]) == 4
    assert len(data["usage"]) == 3 and {u["message"] for u in data["usage"]} >= {None}
    [token] = data["tokens"]
    assert token["name"] == "laptop" and "token_hash" not in token and "hash" not in str(token)


def test_admin_export_is_one_user_at_a_time(
    admin_client: Client, user: Any, user_factory: Any
) -> None:
    response = run_action(admin_client, user, user_factory())
    assert response.status_code == 302
    followed = admin_client.get(response["Location"]).content.decode()
    assert "Select one user: a data export is one user&#x27;s file." in followed


def test_admin_export_needs_permission_to_read_the_chat_log(
    user: Any, user_factory: Any, chat: dict[str, Any]
) -> None:
    staff = user_factory(is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_user", "change_user"])
    )
    client = Client()
    client.force_login(staff)
    changelist = client.get(reverse("admin:auth_user_changelist"))
    assert changelist.status_code == 200
    assert 'value="export_user_data"' not in changelist.content.decode()
    # A forged POST naming the hidden action runs nothing: admin answers the changelist again.
    forged = run_action(client, user)
    assert forged.status_code == 200 and forged["Content-Type"].startswith("text/html")
    assert "Content-Disposition" not in forged
    staff.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="streamchat",
            codename__in=["view_conversation", "view_message", "view_usage"],
        )
    )
    allowed = Client()
    allowed.force_login(staff)
    assert 'value="export_user_data"' in allowed.get(
        reverse("admin:auth_user_changelist")
    ).content.decode()
    response = run_action(allowed, user)
    assert response.status_code == 200 and json.loads(response.content)["user"]["id"] == user.pk
