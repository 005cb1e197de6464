"""The OpenAI-compatible endpoint through the real ``openai`` SDK: a live Daphne serving the demo,
the simulator upstream, a personal token as the API key (no mocks)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import openai
import pytest
from django.utils import timezone

from streamchat.models import ChatModel, Conversation, Message, PersonalToken, RateLimit, Usage
from streamchat.simulator.replies import DEFAULT_REPLY, long_reply, tokenize
from streamchat.tokens import hash_token
from tests.http_helpers import personal_token, session_for

pytestmark = [pytest.mark.django_db(transaction=True)]

QUESTION = [{"role": "user", "content": "Hello there"}]


@pytest.fixture
def base_url(http_server: Any) -> str:
    return f"{http_server.url}/chat/v1"


@pytest.fixture
def sdk(base_url: str, user: Any) -> openai.OpenAI:
    """The SDK pointed at streamchat with a personal token of ``user``; no retries, so a test
    sees each answer as it is."""
    ChatModel.objects.create(model_id="openai/gpt-4o-mini", enabled=True, is_default=True)
    return openai.OpenAI(base_url=base_url, api_key=personal_token(user), max_retries=0)


def test_sdk_streams_a_reply_with_our_ids_and_a_usage_chunk(sdk, simulator, user):
    chunks = list(
        sdk.chat.completions.create(
            model="openai/gpt-4o-mini",
            messages=QUESTION,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == DEFAULT_REPLY
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].id.startswith("chatcmpl-")
    assert not chunks[0].id.startswith("chatcmpl-gen")  # ours, not OpenRouter's generation id
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["stop"]
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage.completion_tokens == len(tokenize(DEFAULT_REPLY))
    assert usage_chunk.usage.total_tokens == (
        usage_chunk.usage.prompt_tokens + usage_chunk.usage.completion_tokens
    )
    # What went upstream: the request's own messages.
    assert simulator.chat_requests[-1].json["messages"] == QUESTION
    # One usage row marked as coming from the API; by default no conversation is stored.
    (usage,) = Usage.objects.all()
    assert usage.source == "api" and usage.user == user and usage.message is None
    assert usage.completion_tokens == usage_chunk.usage.completion_tokens
    assert not Conversation.objects.exists() and not Message.objects.exists()


def test_sdk_without_include_usage_gets_no_usage_chunk(sdk, simulator):
    chunks = list(
        sdk.chat.completions.create(model="openai/gpt-4o-mini", messages=QUESTION, stream=True)
    )
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)


def test_sdk_non_streaming_reply_reads_usage(sdk, simulator, user):
    simulator.next_reply("A short **answer**.")
    completion = sdk.chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=[{"role": "system", "content": "Be brief."}, *QUESTION],
        max_tokens=50,
        temperature=0.5,
    )
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.choices[0].message.content == "A short **answer**."
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "openai/gpt-4o-mini"
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens == len(tokenize("A short **answer**."))
    sent = simulator.chat_requests[-1].json
    assert sent["max_tokens"] == 50 and sent["temperature"] == 0.5
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    (usage,) = Usage.objects.all()
    assert (usage.source, usage.outcome, usage.message) == ("api", "complete", None)


def test_sdk_lists_the_enabled_models(sdk):
    ChatModel.objects.create(model_id="anthropic/claude-3.5-sonnet", enabled=True)
    ChatModel.objects.create(model_id="meta-llama/llama-3.1-8b-instruct", enabled=False)
    listed = {m.id: m for m in sdk.models.list()}
    assert set(listed) == {"openai/gpt-4o-mini", "anthropic/claude-3.5-sonnet"}
    assert listed["anthropic/claude-3.5-sonnet"].owned_by == "anthropic"
    assert listed["openai/gpt-4o-mini"].object == "model"


def test_authentication_errors_missing_unknown_revoked_expired_token(
    base_url, sdk, user, simulator
):
    revoked = personal_token(user, "old")
    PersonalToken.objects.filter(name="old").update(revoked=timezone.now())
    expired = personal_token(user, "short", expires=timezone.now() - timedelta(seconds=1))
    inactive_user = type(user).objects.create_user("gone", password="pass-1234-word")
    inactive = personal_token(inactive_user)
    inactive_user.is_active = False
    inactive_user.save()
    for key in ("sc-not-a-real-token", "sk-or-v1-whatever", revoked, expired, inactive):
        client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as refused:
            client.chat.completions.create(model="openai/gpt-4o-mini", messages=QUESTION)
        assert refused.value.status_code == 401
        assert refused.value.body["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
    assert "revoked" in str(
        pytest.raises(
            openai.AuthenticationError,
            openai.OpenAI(base_url=base_url, api_key=revoked, max_retries=0).models.list,
        ).value
    )
    # No bearer at all; a logged-in session cookie does not count here (and needs no CSRF).
    session = session_for(user)
    bare = httpx.post(
        f"{base_url}/chat/completions",
        json={"model": "openai/gpt-4o-mini", "messages": QUESTION},
        cookies=session.cookies,
    )
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "invalid_api_key"
    assert simulator.chat_requests == []
    assert not Usage.objects.exists()


def test_a_token_records_its_last_use_and_is_stored_only_as_a_hash(sdk, user):
    token = sdk.api_key
    row = PersonalToken.objects.get()
    assert row.last_used is None and row.token_hash == hash_token(token)
    assert row.prefix == token[:10] and token.startswith("sc-")
    sdk.models.list()
    row.refresh_from_db()
    assert row.last_used is not None
    values = [str(v) for v in PersonalToken.objects.values_list(flat=False).get()]
    assert token not in values and all(token[10:20] not in v for v in values)


def test_a_model_that_is_not_enabled_is_not_found(sdk, simulator):
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.chat.completions.create(model="openai/gpt-4o", messages=QUESTION)
    assert missing.value.status_code == 404
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="gpt-4o", messages=QUESTION, stream=True)
    assert simulator.chat_requests == []


def test_limits_answer_rate_limit_error_with_retry_after(sdk, simulator, user):
    RateLimit.objects.create(scope="user", user=user, requests_per_minute=1)
    sdk.chat.completions.create(model="openai/gpt-4o-mini", messages=QUESTION)
    with pytest.raises(openai.RateLimitError) as limited:
        sdk.chat.completions.create(model="openai/gpt-4o-mini", messages=QUESTION, stream=True)
    assert limited.value.status_code == 429
    assert limited.value.body["code"] == "rate_limited"
    assert 1 <= int(limited.value.response.headers["retry-after"]) <= 60
    assert len(simulator.chat_requests) == 1
    refused = Usage.objects.get(outcome="refused")
    assert refused.source == "api" and refused.error_code == "requests_per_minute"


def test_bad_requests_are_400_and_413_in_openai_shape(sdk, base_url):
    for kwargs in (
        {"messages": []},
        {"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        {"messages": QUESTION, "n": 2},
        {"messages": QUESTION, "temperature": 7},
    ):
        with pytest.raises(openai.BadRequestError) as bad:
            sdk.chat.completions.create(model="openai/gpt-4o-mini", **kwargs)
        assert bad.value.body["type"] == "invalid_request_error"
    huge = "x" * (1024 * 1024 + 10)
    too_large = httpx.post(
        f"{base_url}/chat/completions",
        json={"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": huge}]},
        headers={"Authorization": f"Bearer {sdk.api_key}"},
    )
    assert too_large.status_code == 413
    assert too_large.json()["error"]["code"] == "message_too_large"


def test_text_parts_are_joined_and_the_admins_system_prompt_comes_first(sdk, simulator):
    ChatModel.objects.filter(model_id="openai/gpt-4o-mini").update(system_prompt="House rules.")
    sdk.chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=[
            {"role": "developer", "content": "Mine."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Part one, "},
                    {"type": "text", "text": "two."},
                ],
            },
        ],
    )
    assert simulator.chat_requests[-1].json["messages"] == [
        {"role": "system", "content": "House rules."},
        {"role": "system", "content": "Mine."},
        {"role": "user", "content": "Part one, two."},
    ]


def test_upstream_errors_before_the_first_token_are_http_errors(sdk, simulator):
    ChatModel.objects.create(model_id="simulator/moderation", enabled=True)
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(model="simulator/moderation", messages=QUESTION, stream=True)
    assert refused.value.body["code"] == "moderation"
    ChatModel.objects.create(model_id="simulator/rate-limit?retry_after=30", enabled=True)
    with pytest.raises(openai.RateLimitError) as limited:
        sdk.chat.completions.create(model="simulator/rate-limit?retry_after=30", messages=QUESTION)
    assert limited.value.body["code"] == "upstream_rate_limited"
    assert limited.value.response.headers["retry-after"] == "30"
    assert sorted(Usage.objects.values_list("outcome", flat=True)) == ["error", "error"]


def test_an_upstream_error_mid_stream_raises_api_error_after_the_text(sdk, simulator):
    model = "simulator/error-mid?after=3"
    ChatModel.objects.create(model_id=model, enabled=True)
    received = ""
    with pytest.raises(openai.APIError) as failed:
        for chunk in sdk.chat.completions.create(model=model, messages=QUESTION, stream=True):
            received += chunk.choices[0].delta.content or ""
    assert received == "".join(tokenize(DEFAULT_REPLY)[:3])
    assert failed.value.body["code"] == "stream_error"
    assert Usage.objects.get().outcome == "error"


def test_a_client_that_leaves_mid_stream_stops_the_reply(sdk, simulator):
    model = "simulator/long?tokens=3000"
    ChatModel.objects.create(model_id=model, enabled=True)
    simulator.token_delay = 0.005
    stream = sdk.chat.completions.create(model=model, messages=QUESTION, stream=True)
    received = ""
    for chunk in stream:
        received += chunk.choices[0].delta.content or ""
        if len(received) > 50:
            break
    stream.close()
    gone = simulator.wait_for_disconnect(timeout=5.0)  # nobody could read the rest: stopped
    assert gone.tokens_sent < len(tokenize(long_reply(3000)))
    usage = _wait(lambda: Usage.objects.first())
    assert usage.outcome == "stopped" and usage.source == "api"


def _wait(predicate: Any, timeout: float = 10) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met")


async def test_api_store_conversations_keeps_the_exchange_as_a_conversation(
    user, simulator_settings, settings
):
    """With ``API_STORE_CONVERSATIONS`` the request's messages and the reply are a conversation
    of the token's user (in-process: the setting is the server's, so this runs the demo's ASGI app
    here)."""
    from asgiref.sync import sync_to_async
    from django.test import AsyncClient

    settings.STREAMCHAT = {**settings.STREAMCHAT, "API_STORE_CONVERSATIONS": True}
    token = await sync_to_async(personal_token)(user)
    simulator_settings.next_reply("Stored answer")
    response = await AsyncClient().post(
        "/chat/v1/chat/completions",
        {
            "model": "openai/gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Be kind."},
                {"role": "user", "content": "First"},
                {"role": "assistant", "content": "Earlier answer"},
                {"role": "user", "content": "Second question"},
            ],
        },
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["message"]["content"] == "Stored answer"
    conversation = await Conversation.objects.aget(owner=user)
    assert conversation.title == "Second question"
    chain = [
        (m.role, m.content, m.status)
        async for m in Message.objects.filter(conversation=conversation).order_by("id")
    ]
    assert chain == [
        ("system", "Be kind.", "complete"),
        ("user", "First", "complete"),
        ("assistant", "Earlier answer", "complete"),
        ("user", "Second question", "complete"),
        ("assistant", "Stored answer", "complete"),
    ]
    usage = await Usage.objects.select_related("message").aget()
    assert usage.source == "api" and usage.message.content == "Stored answer"
