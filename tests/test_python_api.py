"""The Python API (streamchat.api) as a front end of the engine: sync and async generators,
complete(), callbacks, keys — and, like every entry point, the acting user's limits and one usage
row per call (``source="python"``), against the simulator over real HTTP."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from streamchat import api
from streamchat.crypto import encrypt
from streamchat.exceptions import ChatError
from streamchat.keys import KeyChoice, key_hint
from streamchat.models import ApiKey, ChatModel, RateLimit, Usage
from streamchat.openrouter.errors import OpenRouterError
from streamchat.openrouter.events import ContentDelta, Finish, ReasoningDelta, UsageReport
from streamchat.simulator import Simulator

pytestmark = [pytest.mark.django_db(transaction=True)]

MODELS = [
    "openai/gpt-4o-mini",
    "openai/gpt-4o",
    "simulator/reasoning",
    "simulator/reasoning?echo=1",
    "simulator/echo",
    "simulator/echo?usage=none",
    "simulator/long?delay_ms=20",
    "simulator/moderation",
    "simulator/error-mid?after=2",
]


@pytest.fixture(autouse=True)
def enabled_models(simulator_settings: Simulator) -> None:
    """The simulator's models, enabled in admin with their prices (the first one the default)."""
    for index, model_id in enumerate(MODELS):
        ChatModel.objects.create(
            model_id=model_id,
            enabled=True,
            is_default=index == 0,
            prompt_price=Decimal("0.15"),
            completion_price=Decimal("0.6"),
        )


def usage_rows() -> list[Usage]:
    return list(Usage.objects.select_related("user").order_by("id"))


async def settled() -> list[Usage]:
    """The usage rows, once the replies that made them ended (their rows are written at the end)."""
    for _ in range(200):
        rows = await sync_to_async(usage_rows)()
        if rows and all(row.outcome != "" for row in rows):
            return rows
        await asyncio.sleep(0.02)
    return await sync_to_async(usage_rows)()


async def test_astream_yields_text_calls_callbacks_and_records_usage_for_the_user(
    simulator_settings: Simulator, user: Any
) -> None:
    simulator_settings.next_reply("Streaming *from* Python")
    chunks: list[str] = []
    results: list[api.ChatResult] = []

    async def on_complete(result: api.ChatResult) -> None:  # async callbacks are awaited
        results.append(result)

    pieces = [
        piece
        async for piece in api.astream(
            "Hi",
            user=user,
            model="openai/gpt-4o-mini",
            on_chunk=chunks.append,
            on_complete=on_complete,
        )
    ]
    assert "".join(pieces) == "Streaming *from* Python" and chunks == pieces and len(pieces) > 3
    assert results[0].text == "Streaming *from* Python" and results[0].finish_reason == "stop"
    [row] = await settled()
    assert (row.source, row.user_id, row.outcome) == ("python", user.pk, "complete")
    assert row.model_requested == "openai/gpt-4o-mini"
    # One cost: what the caller was told is what the ledger holds.
    assert results[0].usage.cost == row.cost and results[0].usage.estimated is False
    assert results[0].usage.completion_tokens == row.completion_tokens


async def test_acomplete_collects_the_whole_reply(simulator_settings: Simulator, user: Any) -> None:
    result = await api.acomplete(
        [{"role": "user", "content": "Echo me"}],
        user=user,
        model="simulator/reasoning?echo=1",
        system="Be brief.",
    )
    assert result.text == "Echo me" and result.reasoning
    assert result.model == "simulator/reasoning" and result.generation_id.startswith("gen-")
    assert result.usage.reasoning_tokens > 0
    assert result.usage.cost is not None and result.usage.cost > 0
    sent = simulator_settings.chat_requests[-1].json["messages"]
    assert sent == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Echo me"},
    ]


async def test_astream_events_are_typed(simulator_settings: Simulator, user: Any) -> None:
    events = [e async for e in api.astream_events("Hi", user=user, model="simulator/reasoning")]
    kinds = {type(e) for e in events}
    assert kinds == {ReasoningDelta, ContentDelta, UsageReport, Finish}
    assert isinstance(events[-1], Finish) and isinstance(events[-2], UsageReport)


async def test_usage_is_always_an_object_marked_estimated_when_upstream_sent_none(
    simulator_settings: Simulator, user: Any
) -> None:
    result = await api.acomplete("Count me", user=user, model="simulator/echo?usage=none")
    assert result.text == "Count me"
    assert result.usage.estimated is True and result.usage.completion_tokens > 0
    [row] = await settled()
    assert row.cost_source in ("estimated", "reported")  # /generation may have answered since
    assert row.source == "python"


def test_sync_stream_and_complete_act_as_the_system_user(simulator_settings: Simulator) -> None:
    simulator_settings.next_replies(["one two", "three four"])
    chunks: list[str] = []
    pieces = list(api.stream("Hi", model="openai/gpt-4o", on_chunk=chunks.append))
    assert "".join(pieces) == "one two" and chunks == pieces
    done: list[api.ChatResult] = []
    result = api.complete("Hi", model="openai/gpt-4o", on_complete=done.append)
    assert result.text == "three four" and done == [result]
    assert result.finish_reason == "stop"
    rows = asyncio.run(settled())
    assert [(r.source, r.user.username) for r in rows] == [("python", "streamchat-system")] * 2
    system = get_user_model().objects.get(username="streamchat-system")
    assert not system.is_active and not system.has_usable_password()


def test_the_system_user_is_a_setting(simulator_settings: Simulator, settings: Any) -> None:
    settings.STREAMCHAT = {**settings.STREAMCHAT, "SYSTEM_USERNAME": "reports-bot"}
    api.complete("Hi", model="simulator/echo")
    [row] = asyncio.run(settled())
    assert row.user.username == "reports-bot"


def test_sync_stream_closed_early_stops_the_reply_and_records_it(
    simulator_settings: Simulator,
) -> None:
    pieces = api.stream("Hi", model="simulator/long?delay_ms=20")
    assert next(pieces) and next(pieces)
    pieces.close()
    simulator_settings.wait_for_disconnect(timeout=10)
    [row] = asyncio.run(settled())
    assert row.outcome == "stopped" and row.source == "python"


async def test_errors_reach_on_error_and_are_raised(
    simulator_settings: Simulator, user: Any
) -> None:
    errors: list[Exception] = []
    with pytest.raises(OpenRouterError) as caught:
        await api.acomplete(
            "Hi", user=user, model="simulator/moderation", on_error=errors.append
        )
    assert errors == [caught.value] and caught.value.code == "moderation"
    [row] = await settled()
    assert (row.outcome, row.error_code, row.source) == ("error", "moderation", "python")


def test_sync_errors_reach_on_error_and_are_raised(simulator_settings: Simulator) -> None:
    sync_errors: list[Exception] = []
    pieces: list[str] = []
    with pytest.raises(OpenRouterError):
        for piece in api.stream(
            "Hi", model="simulator/error-mid?after=2", on_error=sync_errors.append
        ):
            pieces.append(piece)
    assert [e.code for e in sync_errors] == ["stream_error"]  # type: ignore[attr-defined]
    assert pieces  # the text before the error was streamed


async def test_sync_helpers_refuse_a_running_loop(simulator_settings: Simulator) -> None:
    with pytest.raises(RuntimeError, match="astream"):
        api.complete("Hi")


async def test_explicit_key_choices(simulator_settings: Simulator, user: Any) -> None:
    keys = [KeyChoice(id=None, secret=simulator_settings.api_key, hint="x")]
    result = await api.acomplete("Hi", user=user, model="simulator/echo", keys=keys)
    assert result.text == "Hi"
    [row] = await settled()
    assert row.source == "python" and row.api_key_id is None


def test_default_keys_use_the_setting(simulator_settings: Simulator) -> None:
    result = api.complete("From settings", model="simulator/echo")
    assert result.text == "From settings"
    assert (
        simulator_settings.chat_requests[-1]
        .headers["Authorization"]
        .endswith(simulator_settings.api_key)
    )


def test_failing_key_row_is_marked_and_the_next_used(simulator_settings: Simulator) -> None:
    bad = "sk-or-v1-revoked-row-key-000000000"

    def row(secret: str, priority: int) -> ApiKey:
        return ApiKey.objects.create(
            label=f"key {priority}",
            secret_encrypted=encrypt(secret),
            hint=key_hint(secret),
            priority=priority,
        )

    first, second = row(bad, 1), row(simulator_settings.api_key, 2)
    result = api.complete("Failover", model="simulator/echo")
    assert result.text == "Failover"
    first.refresh_from_db()
    second.refresh_from_db()
    assert "rejected the API key" in first.last_error and bad not in first.last_error
    assert second.last_error == ""


def test_no_key_at_all(simulator_settings: Simulator, settings: Any) -> None:
    settings.STREAMCHAT = {**settings.STREAMCHAT, "API_KEY": None}
    with pytest.raises(OpenRouterError) as caught:
        api.complete("Hi")
    assert caught.value.code == "no_api_key"


# -- the engine's admission: limits, models, arguments --------------------------------------------


async def test_limits_apply_to_the_acting_user(simulator_settings: Simulator, user: Any) -> None:
    await RateLimit.objects.acreate(scope="user", user=user, requests_per_minute=1)
    await api.acomplete("First", user=user, model="simulator/echo")
    refusals: list[Exception] = []
    with pytest.raises(ChatError) as refused:
        await api.acomplete(
            "Second", user=user, model="simulator/echo", on_error=refusals.append
        )
    assert refused.value.code == "rate_limited" and refused.value.retry_after
    assert refusals == [refused.value]
    assert len(simulator_settings.chat_requests) == 1
    rows = await settled()
    assert [(r.outcome, r.source) for r in rows] == [("complete", "python"), ("refused", "python")]


def test_limits_apply_to_the_system_user(simulator_settings: Simulator) -> None:
    system = api.system_user()
    RateLimit.objects.create(scope="user", user=system, requests_per_minute=1)
    api.complete("First", model="simulator/echo")
    with pytest.raises(ChatError, match="(?i)limit"):
        api.complete("Second", model="simulator/echo")
    assert len(simulator_settings.chat_requests) == 1


async def test_a_model_that_is_not_enabled_is_refused_before_upstream(
    simulator_settings: Simulator, user: Any
) -> None:
    with pytest.raises(ChatError) as refused:
        await api.acomplete("Hi", user=user, model="anthropic/claude-3.5-sonnet")
    assert refused.value.code == "model_unavailable"
    assert simulator_settings.chat_requests == []


async def test_without_a_model_the_default_model_answers(
    simulator_settings: Simulator, user: Any
) -> None:
    await api.acomplete("Hi", user=user)
    assert simulator_settings.chat_requests[-1].json["model"] == "openai/gpt-4o-mini"


async def test_extra_body_and_fallbacks_reach_upstream_but_not_the_budget_fields(
    simulator_settings: Simulator, user: Any
) -> None:
    await api.acomplete(
        "Hi",
        user=user,
        model="simulator/echo",
        extra_body={"reasoning": {"effort": "low"}, "seed": 7},
        fallback_models=["openai/gpt-4o-mini"],
    )
    sent = simulator_settings.chat_requests[-1].json
    assert sent["reasoning"] == {"effort": "low"} and sent["seed"] == 7
    assert sent["models"] == ["openai/gpt-4o-mini"]
    with pytest.raises(ChatError, match="max_tokens") as refused:
        await api.acomplete("Hi", user=user, extra_body={"max_tokens": 10**6})
    assert refused.value.field == "extra_body"
    assert len(simulator_settings.chat_requests) == 1


async def test_a_user_that_is_not_saved_is_refused(simulator_settings: Simulator) -> None:
    from django.contrib.auth.models import AnonymousUser

    with pytest.raises(ChatError) as refused:
        await api.acomplete("Hi", user=AnonymousUser())
    assert refused.value.code == "not_authenticated"
    assert simulator_settings.chat_requests == []
