"""Every streamchat admin page renders for staff, none for anyone else, and user-supplied strings
are escaped on all of them (XSS-18)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, Permission
from django.urls import reverse

from streamchat import crypto
from streamchat.keys import key_hint
from streamchat.models import ApiKey, ChatModel, Conversation, Message, RateLimit, Usage

pytestmark = pytest.mark.django_db

PAYLOAD = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=1">'
RAW_MARKERS = ("<script>window.__pwned", "<img src=x onerror")
MODELS = ["apikey", "chatmodel", "ratelimit", "usage", "conversation", "message"]


@pytest.fixture
def objects(user_factory):
    owner = user_factory(username="alice", first_name=PAYLOAD)
    group = Group.objects.create(name=f"team {PAYLOAD}")
    owner.groups.add(group)
    conversation = Conversation.objects.create(
        owner=owner, title=f"Title {PAYLOAD}", model=f"evil/{PAYLOAD}"
    )
    question = Message.objects.create(
        conversation=conversation, role="user", content=f"Hi {PAYLOAD}"
    )
    reply = Message.objects.create(
        conversation=conversation,
        parent=question,
        role="assistant",
        content=f"Reply {PAYLOAD}",
        model=f"m/{PAYLOAD}",
        error_message=PAYLOAD,
    )
    secret = "sk-or-v1-" + "5" * 64
    key = ApiKey.objects.create(
        label=f"key {PAYLOAD}",
        secret_encrypted=crypto.encrypt(secret),
        hint=key_hint(secret),
        last_error=PAYLOAD,
    )
    model = ChatModel.objects.create(
        model_id="openai/gpt-4o",
        display_name=f"GPT {PAYLOAD}",
        enabled=True,
        is_default=True,
        system_prompt=PAYLOAD,
        fallback_models=["x/y"],
    )
    limits = [
        RateLimit.objects.create(scope="default", requests_per_minute=10),
        RateLimit.objects.create(scope="group", group=group, tokens_per_day=1000),
        RateLimit.objects.create(scope="user", user=owner, spend_per_month=Decimal("5")),
    ]
    usage = Usage.objects.create(
        user=owner,
        message=reply,
        api_key=key,
        model_requested=PAYLOAD,
        model_used=f"m/{PAYLOAD}",
        prompt_tokens=12,
        completion_tokens=30,
        cost=Decimal("0.0012"),
        outcome="complete",
        error_code=PAYLOAD[:60],
        details={"note": PAYLOAD},
    )
    return {
        "apikey": key,
        "chatmodel": model,
        "ratelimit": limits[2],
        "usage": usage,
        "conversation": conversation,
        "message": reply,
        "user": owner,
        "group": group,
    }


def page_urls(objects) -> list[tuple[str, int]]:
    """(url, expected status) for every page streamchat adds to admin."""
    urls: list[tuple[str, int]] = [
        (reverse("admin:index"), 200),
        (reverse("admin:app_list", args=["streamchat"]), 200),
        (reverse("admin:streamchat_usage_dashboard"), 200),
        (reverse("admin:streamchat_usage_export"), 200),
        (reverse("admin:auth_user_change", args=[objects["user"].pk]), 200),
        (reverse("admin:auth_group_change", args=[objects["group"].pk]), 200),
        (reverse("admin:auth_user_add"), 200),
    ]
    # The log is read-only: no add or change form, and the ledger cannot be deleted from.
    no_add = {"usage", "conversation", "message"}
    no_delete = {"usage"}
    for name in MODELS:
        pk = objects[name].pk
        urls += [
            (reverse(f"admin:streamchat_{name}_changelist"), 200),
            (reverse(f"admin:streamchat_{name}_add"), 403 if name in no_add else 200),
            (reverse(f"admin:streamchat_{name}_change", args=[pk]), 200),
            (reverse(f"admin:streamchat_{name}_history", args=[pk]), 200),
            (
                reverse(f"admin:streamchat_{name}_delete", args=[pk]),
                403 if name in no_delete else 200,
            ),
        ]
    for scope in ("default", "group"):
        limit = RateLimit.objects.get(scope=scope)
        urls.append((reverse("admin:streamchat_ratelimit_change", args=[limit.pk]), 200))
    return urls


def test_xss18_every_admin_page_renders_for_staff_and_escapes_user_strings(admin_client, objects):
    escaped_somewhere = False
    for url, status in page_urls(objects):
        response = admin_client.get(url)
        assert response.status_code == status, url
        body = b"".join(response.streaming_content) if response.streaming else response.content
        text = body.decode()
        if not response["Content-Type"].startswith("text/html"):
            # The CSV export keeps the values as they are (text/csv, a download, nosniff).
            assert response["Content-Type"].startswith("text/csv")
            assert response["X-Content-Type-Options"] == "nosniff"
            continue
        for marker in RAW_MARKERS:
            assert marker not in text, f"unescaped user string on {url}"
        escaped_somewhere |= "&lt;script&gt;window.__pwned" in text
    assert escaped_somewhere


def test_changelist_search_filters_and_sorting_render(admin_client, objects):
    for name in MODELS:
        url = reverse(f"admin:streamchat_{name}_changelist")
        for query in ("?q=alice", "?q=%3Cscript%3E", "?o=-1", "?o=2"):
            assert admin_client.get(url + query).status_code == 200, url + query
    usage = reverse("admin:streamchat_usage_changelist")
    for query in (
        "?outcome__exact=complete",
        "?created__year=2020",
        f"?api_key__id__exact={objects['apikey'].pk}",
    ):
        assert admin_client.get(usage + query).status_code == 200


@pytest.mark.parametrize("who", ["anonymous", "chat user"])
def test_non_staff_get_no_admin_access(client, user_factory, objects, who):
    if who == "chat user":
        client.force_login(user_factory())
    for url, _status in page_urls(objects):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("admin:login")), url


def test_staff_without_permissions_get_403(client, user_factory, objects):
    client.force_login(user_factory(is_staff=True))
    for name in MODELS:
        assert client.get(reverse(f"admin:streamchat_{name}_changelist")).status_code == 403
    assert client.get(reverse("admin:streamchat_usage_dashboard")).status_code == 403
    assert client.get(reverse("admin:streamchat_usage_export")).status_code == 403
    assert client.post(reverse("admin:streamchat_chatmodel_sync")).status_code == 403


def test_support_staff_browse_the_chat_log_read_only(client, user_factory, objects):
    support = user_factory(is_staff=True)
    support.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="streamchat",
            codename__in=["view_conversation", "view_message", "view_usage"],
        )
    )
    client.force_login(support)
    conversation = objects["conversation"]
    page = client.get(reverse("admin:streamchat_conversation_change", args=[conversation.pk]))
    assert page.status_code == 200
    text = page.content.decode()
    assert "Reply &lt;script&gt;" in text  # the messages are there
    assert 'name="_save"' not in text  # and nothing can be saved
    listing = client.get(reverse("admin:streamchat_conversation_changelist")).content.decode()
    assert ">$0.0012<" in listing and ">42<" in listing  # its usage: cost and tokens
    message = client.get(reverse("admin:streamchat_message_change", args=[objects["message"].pk]))
    assert message.status_code == 200 and "0.0012" in message.content.decode()
    assert (
        client.post(
            reverse("admin:streamchat_message_change", args=[objects["message"].pk]),
            {"content": "edited"},
        ).status_code
        == 403
    )
    assert (
        client.get(
            reverse("admin:streamchat_conversation_delete", args=[conversation.pk])
        ).status_code
        == 403
    )
    assert client.get(reverse("admin:streamchat_apikey_changelist")).status_code == 403


def test_conversation_totals_do_not_multiply_across_messages(admin_client, objects):
    conversation = objects["conversation"]
    question = conversation.messages.get(role="user")
    Usage.objects.create(
        user=conversation.owner,
        message=question,
        prompt_tokens=1,
        completion_tokens=2,
        cost=Decimal("0.0001"),
        outcome="error",
    )
    listing = admin_client.get(reverse("admin:streamchat_conversation_changelist")).content.decode()
    # 2 messages; 45 tokens and $0.0013 over both usage rows.
    assert 'field-messages_count">2<' in listing
    assert 'field-tokens">45<' in listing and "$0.0013<" in listing
