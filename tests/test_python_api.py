"""The Python helpers (streamchat.api): sync and async generators, complete(), callbacks, keys."""

from __future__ import annotations

from typing import Any

import pytest

from streamchat import api
from streamchat.crypto import encrypt
from streamchat.keys import KeyChoice, key_hint
from streamchat.models import ApiKey
from streamchat.openrouter.errors import OpenRouterError
from streamchat.openrouter.events import ContentDelta, Finish, ReasoningDelta, UsageReport
from streamchat.simulator import Simulator


@pytest.mark.once
async def test_astream_yields_text_and_calls_callbacks(simulator_settings: Simulator) -> None:
    simulator_settings.next_reply("Streaming *from* Python")
    chunks: list[str] = []
    results: list[api.ChatResult] = []

    async def on_complete(result: api.ChatResult) -> None:  # async callbacks are awaited
        results.append(result)

    pieces = [
        piece
        async for piece in api.astream(
            "Hi",
            model="openai/gpt-4o-mini",
            api_key=simulator_settings.api_key,
            on_chunk=chunks.append,
            on_complete=on_complete,
        )
    ]
    assert "".join(pieces) == "Streaming *from* Python" and chunks == pieces and len(pieces) > 3
    assert results[0].text == "Streaming *from* Python" and results[0].finish_reason == "stop"


@pytest.mark.once
async def test_acomplete_collects_the_whole_reply(simulator_settings: Simulator) -> None:
    result = await api.acomplete(
        [{"role": "user", "content": "Echo me"}],
        model="simulator/reasoning?echo=1",
        system="Be brief.",
        api_key=simulator_settings.api_key,
    )
    assert result.text == "Echo me" and result.reasoning
    assert result.model == "simulator/reasoning" and result.generation_id.startswith("gen-")
    assert result.usage is not None and result.usage.reasoning_tokens > 0
    assert result.usage.cost is not None and result.usage.cost > 0
    sent = simulator_settings.chat_requests[-1].json["messages"]
    assert sent == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Echo me"},
    ]


@pytest.mark.once
async def test_astream_events_are_typed(simulator_settings: Simulator) -> None:
    events = [
        e
        async for e in api.astream_events(
            "Hi", model="simulator/reasoning", api_key=simulator_settings.api_key
        )
    ]
    kinds = {type(e) for e in events}
    assert kinds == {ReasoningDelta, ContentDelta, UsageReport, Finish}
    assert isinstance(events[-1], Finish)


@pytest.mark.once
def test_sync_stream_and_complete(simulator_settings: Simulator) -> None:
    simulator_settings.next_replies(["one two", "three four"])
    chunks: list[str] = []
    pieces = list(
        api.stream(
            "Hi", model="openai/gpt-4o", api_key=simulator_settings.api_key, on_chunk=chunks.append
        )
    )
    assert "".join(pieces) == "one two" and chunks == pieces
    done: list[api.ChatResult] = []
    result = api.complete(
        "Hi", model="openai/gpt-4o", api_key=simulator_settings.api_key, on_complete=done.append
    )
    assert result.text == "three four" and done == [result]
    assert result.usage is not None and result.finish_reason == "stop"


@pytest.mark.once
def test_sync_stream_closed_early_closes_upstream(simulator_settings: Simulator) -> None:
    pieces = api.stream(
        "Hi", model="simulator/long?delay_ms=20", api_key=simulator_settings.api_key
    )
    assert next(pieces) and next(pieces)
    pieces.close()
    simulator_settings.wait_for_disconnect(timeout=10)


@pytest.mark.once
async def test_errors_reach_on_error_and_are_raised(simulator_settings: Simulator) -> None:
    errors: list[OpenRouterError] = []
    with pytest.raises(OpenRouterError) as caught:
        await api.acomplete(
            "Hi",
            model="simulator/moderation",
            api_key=simulator_settings.api_key,
            on_error=errors.append,
        )
    assert errors == [caught.value] and caught.value.code == "moderation"


@pytest.mark.once
def test_sync_errors_reach_on_error_and_are_raised(simulator_settings: Simulator) -> None:
    sync_errors: list[OpenRouterError] = []
    with pytest.raises(OpenRouterError):
        list(
            api.stream(
                "Hi",
                model="simulator/error-mid?after=2",
                api_key=simulator_settings.api_key,
                on_error=sync_errors.append,
            )
        )
    assert [e.code for e in sync_errors] == ["stream_error"]


@pytest.mark.once
async def test_sync_helpers_refuse_a_running_loop(simulator_settings: Simulator) -> None:
    with pytest.raises(RuntimeError, match="astream"):
        api.complete("Hi", api_key=simulator_settings.api_key)


@pytest.mark.once
async def test_explicit_key_choices(simulator_settings: Simulator) -> None:
    keys = [KeyChoice(id=None, secret=simulator_settings.api_key, hint="x")]
    result = await api.acomplete("Hi", model="simulator/echo", keys=keys)
    assert result.text == "Hi"


@pytest.mark.django_db
def test_default_keys_use_the_setting(simulator_settings: Simulator) -> None:
    result = api.complete("From settings", model="simulator/echo")
    assert result.text == "From settings"
    assert (
        simulator_settings.chat_requests[-1]
        .headers["Authorization"]
        .endswith(simulator_settings.api_key)
    )


@pytest.mark.django_db(transaction=True)
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


@pytest.mark.django_db
def test_no_key_at_all(settings: Any) -> None:
    settings.STREAMCHAT = {**settings.STREAMCHAT, "API_KEY": None}
    with pytest.raises(OpenRouterError) as caught:
        api.complete("Hi")
    assert caught.value.code == "no_api_key"
