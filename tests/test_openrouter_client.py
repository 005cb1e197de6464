"""The streaming client against the simulator over real loopback HTTP, through the openai SDK:
replies, usage, pre-stream errors, retries, failover, mid-stream faults, deadlines, cancellation.
"""

from __future__ import annotations

import asyncio
import socket
import time
from decimal import Decimal
from typing import Any

import pytest

from streamchat.keys import KeyChoice
from streamchat.openrouter import sdk
from streamchat.openrouter.client import ChatRequest, ChatStream, open_stream, retry_delay
from streamchat.openrouter.errors import OpenRouterError
from streamchat.openrouter.events import (
    ContentDelta,
    Finish,
    ReasoningDelta,
    StreamEvent,
    UsageReport,
)
from streamchat.simulator import Simulator
from streamchat.simulator.replies import DEFAULT_REPLY, REASONING

pytestmark = pytest.mark.once

HELLO = [{"role": "user", "content": "Hello there"}]


@pytest.fixture
def sim(simulator_settings: Simulator, settings: Any) -> Simulator:
    """The simulator, with fast retries and short deadlines."""
    settings.STREAMCHAT = {
        **settings.STREAMCHAT,
        "BACKOFF_BASE": 0.01,
        "BACKOFF_MAX": 0.05,
        "MAX_RETRIES": 2,
        "RETRY_AFTER_MAX": 1.0,
        "FIRST_TOKEN_TIMEOUT": 5.0,
        "IDLE_TIMEOUT": 5.0,
        "TOTAL_TIMEOUT": 30.0,
        "APP_URL": "https://chat.example/",
        "APP_TITLE": "Example chat",
    }
    return simulator_settings


def tune(settings: Any, **values: Any) -> None:
    settings.STREAMCHAT = {**settings.STREAMCHAT, **values}


def key_for(secret: str, id: int | None = None) -> KeyChoice:
    return KeyChoice(id=id, secret=secret, hint=secret[-4:])


def request(model: str = "simulator/echo", **fields: Any) -> ChatRequest:
    return ChatRequest(model=model, messages=fields.pop("messages", HELLO), **fields)


async def run(
    sim: Simulator, model: str = "simulator/echo", **fields: Any
) -> tuple[list[StreamEvent], OpenRouterError | None, ChatStream | None]:
    """Open and drain a stream: (events, the error raised, the stream)."""
    events: list[StreamEvent] = []
    stream = None
    try:
        stream = await open_stream(request(model, **fields), [key_for(sim.api_key)])
        async with stream:
            async for event in stream:
                events.append(event)
    except OpenRouterError as error:
        return events, error, stream
    return events, None, stream


def text(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, ContentDelta))


# --- normal replies -------------------------------------------------------------------------


async def test_default_reply_events_in_order(sim: Simulator) -> None:
    events, error, stream = await run(sim, "openai/gpt-4o-mini")
    assert error is None and stream is not None
    assert text(events) == DEFAULT_REPLY
    usage, finish = events[-2:]
    assert isinstance(usage, UsageReport) and isinstance(finish, Finish)
    assert all(isinstance(e, ContentDelta) for e in events[:-2])
    assert finish == Finish("stop", "openai/gpt-4o-mini", stream.generation_id, "OpenAI")
    generation = sim.generation(stream.generation_id)
    assert generation is not None and not generation.cancelled


@pytest.mark.parametrize("variant", ["A", "B", "C"])
async def test_usage_variants_counted_once(sim: Simulator, variant: str) -> None:
    events, error, stream = await run(sim, f"openai/gpt-4o?usage={variant}")
    assert error is None and stream is not None
    usages = [e for e in events if isinstance(e, UsageReport)]
    finishes = [e for e in events if isinstance(e, Finish)]
    assert len(usages) == 1 and len(finishes) == 1
    assert finishes[0].reason == "stop"
    generation = sim.generation(stream.generation_id)
    assert generation is not None
    usage = usages[0]
    assert usage.prompt_tokens == generation.prompt_tokens == 8
    assert usage.completion_tokens == generation.completion_tokens > 50
    # openai/gpt-4o: 0.0000025 per prompt token, 0.00001 per completion token
    expected = Decimal("0.0000025") * 8 + Decimal("0.00001") * usage.completion_tokens
    assert usage.cost == expected == generation.cost
    assert usage.details["total_tokens"] == usage.prompt_tokens + usage.completion_tokens


async def test_reasoning_deltas_come_first(sim: Simulator) -> None:
    events, error, _ = await run(sim, "simulator/reasoning")
    assert error is None
    thoughts = [e for e in events if isinstance(e, ReasoningDelta)]
    assert "".join(t.text for t in thoughts) == REASONING
    first_content = next(i for i, e in enumerate(events) if isinstance(e, ContentDelta))
    assert events.index(thoughts[-1]) < first_content
    usage = next(e for e in events if isinstance(e, UsageReport))
    assert usage.reasoning_tokens == len(thoughts)


async def test_request_body_and_attribution_headers(sim: Simulator) -> None:
    events, error, _ = await run(
        sim,
        "openai/gpt-4o-mini",
        fallback_models=["anthropic/claude-3.5-sonnet"],
        temperature=0.5,
        max_tokens=5,
        extra_body={"reasoning": {"effort": "low"}},
    )
    assert error is None
    recorded = sim.chat_requests[-1]
    assert recorded.headers["HTTP-Referer"] == "https://chat.example/"
    assert recorded.headers["X-OpenRouter-Title"] == recorded.headers["X-Title"] == "Example chat"
    body = recorded.json
    assert body["models"] == ["anthropic/claude-3.5-sonnet"]
    assert body["temperature"] == 0.5 and body["max_tokens"] == 5 and body["stream"] is True
    assert body["reasoning"] == {"effort": "low"}
    assert events[-1].reason == "length"  # type: ignore[union-attr]
    assert len([e for e in events if isinstance(e, ContentDelta)]) == 5


async def test_fallback_model_reported_in_finish(sim: Simulator) -> None:
    events, error, _ = await run(sim, "simulator/server-error", fallback_models=["openai/gpt-4o"])
    assert error is None
    finish = events[-1]
    assert isinstance(finish, Finish) and finish.model == "openai/gpt-4o"
    assert len(sim.chat_requests) == 1


async def test_text_is_cleaned_of_nul_and_lone_surrogates(sim: Simulator) -> None:
    sim.next_reply("a\x00b \ud800c d\U0001f600")
    events, error, _ = await run(sim, "openai/gpt-4o-mini")
    assert error is None
    assert text(events) == "ab c d\U0001f600"


async def test_one_shared_client_per_loop_and_key(sim: Simulator) -> None:
    assert sdk.async_client("sk-or-v1-a") is sdk.async_client("sk-or-v1-a")
    assert sdk.async_client("sk-or-v1-a") is not sdk.async_client("sk-or-v1-b")
    assert sdk.async_client("sk-or-v1-a").max_retries == 0


# --- errors before the stream ---------------------------------------------------------------


async def test_no_api_key() -> None:
    with pytest.raises(OpenRouterError) as caught:
        await open_stream(request(), [])
    assert caught.value.code == "no_api_key"


async def test_bad_request_400(sim: Simulator) -> None:
    _, error, _ = await run(sim, "openai/gpt-4o-mini", messages=[])
    assert error is not None and error.code == "bad_request" and error.status == 400
    assert len(sim.chat_requests) == 1


@pytest.mark.parametrize("model", ["gpt-4o", "openai/no-such-model", "simulator/unknown-model"])
async def test_unknown_model_names_the_prefix_rule(sim: Simulator, model: str) -> None:
    _, error, _ = await run(sim, model)
    assert error is not None and error.code == "unknown_model"
    assert "openai/gpt-4o" in error.message and "prefix" in error.message
    assert len(sim.chat_requests) == 1


@pytest.mark.parametrize("failure", ["revoked", "out_of_credits"])
async def test_failover_to_the_next_key(sim: Simulator, failure: str) -> None:
    bad = "sk-or-v1-first-key-000000000000"
    sim.add_key(bad, credits=0 if failure == "out_of_credits" else None)
    if failure == "revoked":
        sim.revoke_key(bad)
    failed: list[tuple[KeyChoice, OpenRouterError]] = []

    async def on_key_failure(key: KeyChoice, error: OpenRouterError) -> None:
        failed.append((key, error))

    keys = [key_for(bad, id=1), key_for(sim.api_key, id=2)]
    stream = await open_stream(request(), keys, on_key_failure=on_key_failure)
    async with stream:
        events = [e async for e in stream]
    assert stream.key.id == 2 and text(events) == "Hello there"
    assert [(k.id, e.code) for k, e in failed] == [
        (1, "invalid_key" if failure == "revoked" else "out_of_credits")
    ]
    assert bad not in failed[0][1].message
    auth = [r.headers["Authorization"] for r in sim.chat_requests]
    assert auth == [f"Bearer {bad}", f"Bearer {sim.api_key}"]


async def test_every_key_failing_raises_the_last_error(sim: Simulator) -> None:
    keys = [key_for("sk-or-v1-nobody-1111111111"), key_for("sk-or-v1-nobody-2222222222")]
    with pytest.raises(OpenRouterError) as caught:
        await open_stream(request(), keys)
    assert caught.value.code == "invalid_key" and caught.value.status == 401
    assert "nobody" not in caught.value.message


async def test_moderation_403_is_not_retried(sim: Simulator) -> None:
    _, error, _ = await run(sim, "simulator/moderation")
    assert error is not None and error.code == "moderation" and error.status == 403
    assert "harassment" in error.message
    assert len(sim.chat_requests) == 1


@pytest.mark.parametrize(
    ("model", "code"),
    [
        ("simulator/timeout?times=1&echo=1", "timeout"),
        ("simulator/server-error?status=500&times=1&echo=1", "upstream_unavailable"),
        ("simulator/server-error?status=502&times=1&echo=1", "upstream_unavailable"),
        ("simulator/server-error?status=503&times=1&echo=1", "upstream_unavailable"),
    ],
)
async def test_408_and_5xx_retried_with_backoff(sim: Simulator, model: str, code: str) -> None:
    events, error, _ = await run(sim, model)
    assert error is None and text(events) == "Hello there"
    assert len(sim.chat_requests) == 2


async def test_retries_give_up_after_max_retries(sim: Simulator) -> None:
    _, error, _ = await run(sim, "simulator/server-error?status=502")
    assert error is not None and error.code == "upstream_unavailable" and error.retriable
    assert len(sim.chat_requests) == 3  # the first attempt and MAX_RETRIES (2)


async def test_st09_429_before_first_token_one_retry_one_reply(sim: Simulator) -> None:
    started = time.monotonic()
    events, error, _ = await run(sim, "simulator/rate-limit?retry_after=0.2&times=1&echo=1")
    assert error is None and text(events) == "Hello there"
    assert len(sim.chat_requests) == 2
    assert time.monotonic() - started >= 0.2  # Retry-After was honoured


async def test_st09_429_after_first_token_no_retry_text_kept(sim: Simulator) -> None:
    sim.next_reply("one two six ten and so on")
    events, error, _ = await run(
        sim, "simulator/error-mid?after=4&code=429&message=Rate+limit+exceeded"
    )
    assert error is not None and error.code == "stream_error" and error.status == 429
    assert text(events) == "one two six ten"
    assert len(sim.chat_requests) == 1


async def test_429_retry_after_beyond_the_maximum_is_not_waited(sim: Simulator) -> None:
    # Waiting the 60 s out would overrun this bound; the one request says it was not retried.
    _, error, _ = await asyncio.wait_for(run(sim, "simulator/rate-limit?retry_after=60"), 30)
    assert error is not None and error.code == "rate_limited" and error.retry_after == 60
    assert "60 s" in error.message
    assert len(sim.chat_requests) == 1


async def test_402_retried_only_when_transient(sim: Simulator) -> None:
    events, error, _ = await run(sim, "simulator/in-flight-budget?retry_after=0.05&times=1&echo=1")
    assert error is None and text(events) == "Hello there"
    assert len(sim.chat_requests) == 2
    without_header = await run(sim, "simulator/in-flight-budget?retry_after=none&n=2")
    assert without_header[1] is not None and without_header[1].code == "out_of_credits"
    assert len(sim.chat_requests) == 3  # not retried: a 402 without Retry-After is final


async def test_connection_refused_is_retried_then_reported(sim: Simulator, settings: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tune(settings, BASE_URL=f"http://127.0.0.1:{port}/api/v1", MAX_RETRIES=1)
    _, error, _ = await asyncio.wait_for(run(sim), 30)
    assert error is not None and error.code == "connection_error" and error.retriable


# --- errors after HTTP 200 ------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["top", "choice"])
async def test_st10_mid_stream_error_keeps_partial_text(sim: Simulator, shape: str) -> None:
    events, error, stream = await run(sim, f"simulator/error-mid?after=3&shape={shape}")
    assert error is not None and error.code == "stream_error" and error.status == 502
    assert "Provider disconnected unexpectedly" in error.message
    assert text(events) == DEFAULT_REPLY[: len(text(events))] and len(text(events)) > 0
    assert len([e for e in events if isinstance(e, ContentDelta)]) == 3
    assert not any(isinstance(e, Finish) for e in events)
    assert len(sim.chat_requests) == 1
    assert stream is not None and error.generation_id == stream.generation_id


@pytest.mark.parametrize("shape", ["top", "choice"])
async def test_st10_usage_after_the_error_is_reported(sim: Simulator, shape: str) -> None:
    events, error, stream = await run(
        sim, f"simulator/error-mid?after=3&shape={shape}&usage_after=1"
    )
    assert error is not None and error.code == "stream_error"
    assert isinstance(events[-1], UsageReport) and events[-1].completion_tokens == 3
    assert stream is not None and stream.usage == events[-1]


@pytest.mark.parametrize("shape", ["top", "choice"])
async def test_error_before_any_token_is_retried_like_a_5xx(sim: Simulator, shape: str) -> None:
    events, error, _ = await run(
        sim, f"simulator/error-mid?after=0&shape={shape}&code=server_error"
    )
    assert error is not None and error.code == "stream_error" and error.status is None
    assert "before replying" in error.message and "mid-reply" not in error.message
    assert events == []
    assert len(sim.chat_requests) == 3  # the first attempt and MAX_RETRIES (2), as for a 502


@pytest.mark.parametrize("shape", ["top", "choice"])
@pytest.mark.parametrize("code", ["502", "429", "server_error"])
async def test_error_before_any_token_once_then_the_reply(
    sim: Simulator, shape: str, code: str
) -> None:
    events, error, stream = await run(
        sim, f"simulator/error-mid?after=0&shape={shape}&code={code}&usage_after=1&times=1"
    )
    assert error is None and text(events) == DEFAULT_REPLY
    assert isinstance(events[-1], Finish) and events[-1].reason == "stop"
    assert len([e for e in events if isinstance(e, UsageReport)]) == 1  # the reply's, only
    assert len(sim.chat_requests) == 2
    assert stream is not None and stream.generation_id == events[-1].generation_id


@pytest.mark.parametrize("code", ["400", "invalid_request"])
async def test_error_before_any_token_that_a_retry_cannot_fix_is_not_retried(
    sim: Simulator, code: str
) -> None:
    events, error, _ = await run(sim, f"simulator/error-mid?after=0&code={code}&times=1")
    assert error is not None and error.code == "stream_error" and not error.retriable
    assert "before replying" in error.message
    assert events == [] and len(sim.chat_requests) == 1


async def test_connection_reset_before_any_token_is_retried(sim: Simulator) -> None:
    events, error, _ = await run(sim, "simulator/drop?after=0&times=1")
    assert error is None and text(events) == DEFAULT_REPLY
    assert len(sim.chat_requests) == 2


async def test_a_stop_before_the_first_token_sees_the_open_stream(sim: Simulator) -> None:
    # on_open hands over each attempt's stream at HTTP 200, before its first delta.
    opened: list[ChatStream] = []
    task = asyncio.ensure_future(
        open_stream(
            request("simulator/slow-first?delay=30"), [key_for(sim.api_key)], on_open=opened.append
        )
    )
    while not opened:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert opened[0].generation_id.startswith("gen-")
    await sim.await_disconnect(timeout=10)  # the response was closed: OpenRouter sees the abort


async def test_error_event_followed_by_done(sim: Simulator) -> None:
    events, error, _ = await run(sim, "simulator/error-mid?after=2&done=1")
    assert error is not None and error.code == "stream_error" and len(events) == 2


@pytest.mark.parametrize("mode", ["rst", "fin"])
async def test_st11_connection_reset_keeps_partial_text(sim: Simulator, mode: str) -> None:
    events, error, _ = await run(sim, f"simulator/drop?after=4&mode={mode}")
    assert error is not None and error.code == "connection_error"
    assert len([e for e in events if isinstance(e, ContentDelta)]) == 4
    assert len(sim.chat_requests) == 1


async def test_clean_end_without_finish_is_incomplete(sim: Simulator) -> None:
    events, error, _ = await run(sim, "simulator/cut?after=3")
    assert error is not None and error.code == "incomplete"
    assert len(events) == 3


async def test_finish_without_done_is_complete(sim: Simulator) -> None:
    events, error, _ = await run(sim, "simulator/cut?after=3&finish=1")
    assert error is None and isinstance(events[-1], Finish)


# --- deadlines and cancellation ---------------------------------------------------------------


@pytest.mark.parametrize("comments", ["0", "1"])
async def test_st08_stall_hits_the_idle_timeout(
    sim: Simulator, settings: Any, comments: str
) -> None:
    tune(settings, IDLE_TIMEOUT=0.3)
    started = time.monotonic()
    # The stall lasts until the client leaves: only the idle timeout can end it.
    events, error, _ = await run(sim, f"simulator/stall?after=10&comments={comments}")
    assert error is not None and error.code == "idle_timeout"
    assert time.monotonic() - started >= 0.3  # not before the idle time (a lower bound only)
    assert len(events) == 10  # partial text kept
    gone = await sim.await_disconnect(timeout=10)
    assert gone.tokens_sent == 10
    assert len(sim.chat_requests) == 1  # no retry


async def test_st08_keepalive_comments_do_not_reset_the_first_token_deadline(
    sim: Simulator, settings: Any
) -> None:
    # Long enough for the stream to have opened (and the comments to flow) on a busy machine.
    tune(settings, FIRST_TOKEN_TIMEOUT=1.0)
    sim.config.keepalive_interval = 0.02
    started = time.monotonic()
    # Were the comments resetting the deadline, the reply would arrive after 5 s, with no error.
    events, error, _ = await run(sim, "simulator/slow-first?delay=5")
    assert error is not None and error.code == "first_token_timeout"
    assert time.monotonic() - started >= 1.0  # not before the deadline (a lower bound only)
    assert events == []
    gone = await sim.await_disconnect(timeout=10)
    assert gone.tokens_sent == 0
    assert len(sim.chat_requests) == 1


async def test_slow_first_token_within_the_deadline(sim: Simulator, settings: Any) -> None:
    tune(settings, FIRST_TOKEN_TIMEOUT=2.0, IDLE_TIMEOUT=0.1)
    events, error, _ = await run(sim, "simulator/slow-first?delay=0.3&echo=1")
    assert error is None and text(events) == "Hello there"


async def test_total_timeout(sim: Simulator, settings: Any) -> None:
    # Five pieces, then nothing until the client leaves: only the total deadline can end it (the
    # idle one is longer).
    tune(settings, TOTAL_TIMEOUT=2.0, IDLE_TIMEOUT=30.0)
    events, error, _ = await run(sim, "simulator/stall?after=5")
    assert error is not None and error.code == "total_timeout"
    assert [type(event) for event in events] == [ContentDelta] * 5  # what came before it kept
    gone = await sim.await_disconnect(timeout=10)
    assert gone.tokens_sent == 5


async def test_aclose_mid_reply_is_seen_upstream(sim: Simulator) -> None:
    stream = await open_stream(request("simulator/long?delay_ms=20"), [key_for(sim.api_key)])
    seen = 0
    async for event in stream:
        assert isinstance(event, ContentDelta)
        seen += 1
        if seen == 3:
            break
    await stream.aclose()
    gone = await sim.await_disconnect(timeout=10, generation_id=stream.generation_id)
    generation = sim.wait_for_generation_end(stream.generation_id, timeout=10)
    # Upstream stopped mid-reply (5000 pieces at 20 ms), seeing the client leave.
    assert generation.cancelled and 3 <= gone.tokens_sent < 5000
    await stream.aclose()  # idempotent


async def test_aclose_from_another_task_ends_iteration(sim: Simulator) -> None:
    stream = await open_stream(request("simulator/stall?after=2"), [key_for(sim.api_key)])
    events: list[StreamEvent] = []

    async def consume() -> None:
        async for event in stream:
            events.append(event)

    consumer = asyncio.create_task(consume())
    while len(events) < 2:
        await asyncio.sleep(0.01)
    await stream.aclose()
    await asyncio.wait_for(consumer, 10)  # ends quietly, without a Finish
    assert len(events) == 2
    await sim.await_disconnect(timeout=10)


async def test_cancelling_the_consumer_closes_the_response(sim: Simulator) -> None:
    stream = await open_stream(request("simulator/stall?after=1"), [key_for(sim.api_key)])

    async def consume() -> None:
        async with stream:
            async for _event in stream:
                pass

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    await sim.await_disconnect(timeout=10)


# --- units ----------------------------------------------------------------------------------


def test_retry_delay_rules(settings: Any) -> None:
    tune(settings, MAX_RETRIES=2, BACKOFF_BASE=0.5, BACKOFF_MAX=8.0, RETRY_AFTER_MAX=20.0)
    retriable = OpenRouterError("upstream_unavailable", "x", retriable=True)
    for attempt in range(2):
        for _ in range(50):
            delay = retry_delay(retriable, attempt)
            assert delay is not None and 0 <= delay <= 0.5 * 2**attempt
    assert retry_delay(retriable, 2) is None
    assert retry_delay(OpenRouterError("moderation", "x"), 0) is None
    waits = OpenRouterError("rate_limited", "x", retry_after=3, retriable=True)
    assert retry_delay(waits, 0) == 3
    too_long = OpenRouterError("rate_limited", "x", retry_after=21, retriable=True)
    assert retry_delay(too_long, 0) is None
