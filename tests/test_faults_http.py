"""Upstream faults seen through the HTTP entry points (docs/security.md, "HTTP" column): a reply
streamed as Server-Sent Events, and the OpenAI-compatible API through the real ``openai`` SDK,
from one live Daphne for the module with the simulator upstream.

The server stores OpenAI-compatible exchanges as conversations (``API_STORE_CONVERSATIONS``), so
the text kept for them can be compared with the upstream transcript like a chat reply's; a short
idle timeout and backoff keep the faults fast, and ``MAX_REPLY_CHARS`` is small for ST-15.
``tokenize`` is how the simulator cuts a reply into deltas: ``sent(n)`` is what it sent of the
default reply after ``n`` of them.

- ST-08: a stall after 10 tokens (silence, or only keep-alive comments): the idle timeout closes
  upstream, the client sees an error after the text, the text is kept, no retry.
- ST-09: a 429 before the first token is retried once (one reply); after it, no retry.
- ST-10: an error chunk in a 200 stream (both shapes), with and without usage after it.
- ST-11: the upstream connection reset (RST) or cut mid-body (FIN).
- ST-15: a reply longer than ``MAX_REPLY_CHARS`` is cut there and upstream is closed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from asgiref.sync import sync_to_async

from streamchat.models import ChatModel, Message, Usage
from streamchat.simulator.replies import DEFAULT_REPLY, long_reply, tokenize
from tests.http_helpers import asession_for, assemble, events, personal_token
from tests.servers import ROOT, DaphneServer

pytestmark = [pytest.mark.django_db(transaction=True)]

MAX_REPLY_CHARS = 2000
SERVER_SETTINGS = {
    "IDLE_TIMEOUT": 0.3,
    "BACKOFF_BASE": 0.01,
    "CHECKPOINT_MS": 100,
    "MAX_REPLY_CHARS": MAX_REPLY_CHARS,
    "API_STORE_CONVERSATIONS": True,
}
QUESTION = [{"role": "user", "content": "Question"}]


@pytest.fixture(scope="module")
def faults_server(
    django_db_setup: None, django_db_blocker: Any, _simulator_server: Any, tmp_path_factory: Any
) -> Any:
    """One Daphne for the module: the HTTP tests' settings with SERVER_SETTINGS over them (a
    settings module written for it, so nothing else sees them)."""
    folder = tmp_path_factory.mktemp("settings")
    (folder / "faults_http_settings.py").write_text(
        "from tests.http_settings import *  # noqa: F403\n"
        f"STREAMCHAT = {{**STREAMCHAT, **{SERVER_SETTINGS!r}}}  # noqa: F405\n"
    )
    path = os.pathsep.join(p for p in (str(folder), str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {"DJANGO_SETTINGS_MODULE": "faults_http_settings", "PYTHONPATH": path}
    with django_db_blocker.unblock():
        server = DaphneServer(simulator=_simulator_server, env=env)
    try:
        yield server
    finally:
        server.stop()


def sent(n: int, text: str = DEFAULT_REPLY) -> str:
    """The first ``n`` deltas the simulator sends of ``text``."""
    return "".join(tokenize(text)[:n])


@dataclass
class Outcome:
    """What a client saw of one reply, and what was stored for it."""

    text: str  # what the client received
    finished: dict[str, Any]  # SSE: the reply.finished frame; API: {"error": ..., "finish": ...}
    reply: Message
    usage: Usage


async def stored(reply_id: int | None = None) -> tuple[Message, Usage]:
    reply = await (
        Message.objects.aget(pk=reply_id)
        if reply_id is not None
        else Message.objects.aget(role="assistant")
    )
    usage = [u async for u in Usage.objects.filter(message=reply)]
    assert len(usage) == 1, usage  # one usage row per reply, however it ended
    return reply, usage[0]


async def through_sse(server: DaphneServer, user: Any, model: str) -> Outcome:
    """Send one message with ``model`` as SSE and read its events to the end."""
    await ChatModel.objects.aget_or_create(model_id=model, defaults={"enabled": True})
    session = await asession_for(user)
    async with httpx.AsyncClient(base_url=server.url, cookies=session.cookies, timeout=20) as c:
        body = {"client_id": "f1", "content": "Question", "model": model}
        async with c.stream("POST", "/chat/api/stream/", json=body, headers=session.headers) as r:
            assert r.status_code == 200, await r.aread()
            seen = []
            async for event in events(r):
                seen.append(event)
                if event.event == "end":
                    break
    data = [e.data for e in seen if e.event not in ("comment", "end")]
    assert [e.event for e in seen if e.event != "comment"][-2:] == ["reply.finished", "end"]
    reply, usage = await stored(data[0]["reply"])
    return Outcome(assemble(data), data[-1], reply, usage)


async def through_api(server: DaphneServer, user: Any, model: str, *, stream: bool) -> Outcome:
    """Ask the OpenAI-compatible API with the SDK (no retries); an ``APIError`` is kept in
    ``finished["error"]``."""
    await ChatModel.objects.aget_or_create(model_id=model, defaults={"enabled": True})
    token = await sync_to_async(personal_token)(user)
    client = openai.AsyncOpenAI(base_url=f"{server.url}/chat/v1", api_key=token, max_retries=0)
    text, finish, error = "", None, None
    try:
        if stream:
            async with await client.chat.completions.create(
                model=model, messages=QUESTION, stream=True
            ) as chunks:
                async for chunk in chunks:
                    if chunk.choices:
                        text += chunk.choices[0].delta.content or ""
                        finish = chunk.choices[0].finish_reason or finish
        else:
            completion = await client.chat.completions.create(model=model, messages=QUESTION)
            text, finish = (
                completion.choices[0].message.content,
                completion.choices[0].finish_reason,
            )
    except openai.APIError as failed:
        error = failed
    finally:
        await client.close()
    reply, usage = await stored()
    return Outcome(text, {"error": error, "finish": finish}, reply, usage)


def api_error(outcome: Outcome) -> openai.APIError:
    error = outcome.finished["error"]
    assert isinstance(error, openai.APIError), outcome.finished
    return error


# -- ST-08 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("comments", ["0", "1"])
async def test_st08_sse_stall_after_ten_tokens_idle_timeout_keeps_text_no_retry(
    faults_server, simulator, user, comments
):
    got = await through_sse(faults_server, user, f"simulator/stall?after=10&comments={comments}")
    assert got.finished["status"] == "error" and got.finished["error"]["code"] == "idle_timeout"
    assert got.text == got.reply.content == sent(10)
    assert (got.reply.status, got.reply.error_code) == ("error", "idle_timeout")
    assert len(simulator.chat_requests) == 1  # no retry once text was shown
    gone = await simulator.await_disconnect(timeout=10)  # upstream was closed by us
    assert gone.tokens_sent == 10
    assert (got.usage.outcome, got.usage.error_code) == ("error", "idle_timeout")


@pytest.mark.parametrize("comments", ["0", "1"])
async def test_st08_openai_stall_after_ten_tokens_the_sdk_raises_after_the_text(
    faults_server, simulator, user, comments
):
    model = f"simulator/stall?after=10&comments={comments}"
    got = await through_api(faults_server, user, model, stream=True)
    assert api_error(got).body["code"] == "idle_timeout"
    assert got.text == got.reply.content == sent(10)
    assert (got.reply.status, got.reply.error_code) == ("error", "idle_timeout")
    assert len(simulator.chat_requests) == 1
    assert (await simulator.await_disconnect(timeout=10)).tokens_sent == 10
    assert (got.usage.outcome, got.usage.source) == ("error", "api")


# -- ST-09 ---------------------------------------------------------------------------------------


async def test_st09_sse_429_before_the_first_token_one_retry_one_reply(
    faults_server, simulator, user
):
    got = await through_sse(faults_server, user, "simulator/rate-limit?retry_after=0.2&times=1")
    assert got.finished["status"] == "complete"
    assert got.text == got.reply.content == DEFAULT_REPLY
    assert len(simulator.chat_requests) == 2  # the 429, then one retry
    assert got.usage.outcome == "complete"
    assert await Message.objects.filter(role="assistant").acount() == 1


@pytest.mark.parametrize("stream", [True, False])
async def test_st09_openai_429_before_the_first_token_one_retry_one_reply(
    faults_server, simulator, user, stream
):
    model = "simulator/rate-limit?retry_after=0.2&times=1"
    got = await through_api(faults_server, user, model, stream=stream)
    assert got.finished == {"error": None, "finish": "stop"}
    assert got.text == got.reply.content == DEFAULT_REPLY
    assert len(simulator.chat_requests) == 2
    assert got.usage.outcome == "complete"


async def test_st09_sse_429_after_the_first_token_no_retry_error_text_kept(
    faults_server, simulator, user
):
    model = "simulator/error-mid?after=4&code=429&message=Rate+limit+exceeded"
    got = await through_sse(faults_server, user, model)
    assert got.finished["status"] == "error" and got.finished["error"]["code"] == "stream_error"
    assert "Rate limit exceeded" in got.finished["error"]["message"]
    assert got.text == got.reply.content == sent(4)
    assert len(simulator.chat_requests) == 1
    assert got.usage.outcome == "error"


async def test_st09_openai_429_after_the_first_token_no_retry_the_sdk_raises(
    faults_server, simulator, user
):
    model = "simulator/error-mid?after=4&code=429&message=Rate+limit+exceeded"
    got = await through_api(faults_server, user, model, stream=True)
    error = api_error(got)
    assert error.body["code"] == "stream_error" and "Rate limit exceeded" in error.message
    assert got.text == got.reply.content == sent(4)
    assert len(simulator.chat_requests) == 1
    assert got.usage.outcome == "error"


# -- ST-10 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["top", "choice"])
@pytest.mark.parametrize("usage_after", ["0", "1"])
async def test_st10_sse_mid_stream_error_chunk_keeps_text_and_records_usage(
    faults_server, simulator, user, shape, usage_after
):
    model = f"simulator/error-mid?after=6&shape={shape}&usage_after={usage_after}"
    got = await through_sse(faults_server, user, model)
    assert got.finished["status"] == "error" and got.finished["error"]["code"] == "stream_error"
    assert "Provider disconnected unexpectedly" in got.finished["error"]["message"]
    assert got.text == got.reply.content == sent(6)
    assert (got.reply.status, got.reply.error_code) == ("error", "stream_error")
    assert len(simulator.chat_requests) == 1
    assert (got.usage.outcome, got.usage.error_code) == ("error", "stream_error")
    if usage_after == "1":  # the usage OpenRouter sent after the error is the one recorded
        assert got.usage.cost_source == "reported" and got.usage.completion_tokens == 6
        assert got.finished["usage"]["completion_tokens"] == 6
    else:
        assert got.usage.completion_tokens > 0  # estimated from the text kept


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("shape", ["top", "choice"])
@pytest.mark.parametrize("usage_after", ["0", "1"])
async def test_st10_openai_mid_stream_error_the_sdk_raises_text_and_usage_kept(
    faults_server, simulator, user, stream, shape, usage_after
):
    model = f"simulator/error-mid?after=6&shape={shape}&usage_after={usage_after}"
    got = await through_api(faults_server, user, model, stream=stream)
    error = api_error(got)
    assert error.body["code"] == "stream_error"
    assert "Provider disconnected unexpectedly" in error.message
    if stream:  # the text came before the error; a non-streamed answer is the error alone
        assert got.text == sent(6)
    else:
        assert isinstance(error, openai.InternalServerError) and got.text == ""
    assert got.reply.content == sent(6)
    assert (got.reply.status, got.reply.error_code) == ("error", "stream_error")
    assert len(simulator.chat_requests) == 1
    assert (got.usage.outcome, got.usage.error_code, got.usage.source) == (
        "error",
        "stream_error",
        "api",
    )
    if usage_after == "1":
        assert got.usage.cost_source == "reported" and got.usage.completion_tokens == 6


# -- ST-11 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["rst", "fin"])
async def test_st11_sse_connection_reset_mid_stream_keeps_text(
    faults_server, simulator, user, mode
):
    got = await through_sse(faults_server, user, f"simulator/drop?after=7&mode={mode}")
    assert got.finished["status"] == "error"
    assert got.finished["error"]["code"] == "connection_error" and got.finished["error"]["message"]
    assert got.text == got.reply.content == sent(7)
    assert len(simulator.chat_requests) == 1
    assert (got.usage.outcome, got.usage.error_code) == ("error", "connection_error")


@pytest.mark.parametrize("mode", ["rst", "fin"])
async def test_st11_openai_connection_reset_mid_stream_the_sdk_raises_after_the_text(
    faults_server, simulator, user, mode
):
    got = await through_api(faults_server, user, f"simulator/drop?after=7&mode={mode}", stream=True)
    assert api_error(got).body["code"] == "connection_error"
    assert got.text == got.reply.content == sent(7)
    assert len(simulator.chat_requests) == 1
    assert (got.usage.outcome, got.usage.error_code) == ("error", "connection_error")


# -- ST-15 ---------------------------------------------------------------------------------------


async def test_st15_sse_a_very_long_reply_is_cut_at_max_reply_chars(faults_server, simulator, user):
    simulator.token_delay = 0.0005
    transcript = long_reply(3000)
    assert len(transcript) > 4 * MAX_REPLY_CHARS
    got = await through_sse(faults_server, user, "simulator/long?tokens=3000")
    assert got.text == got.reply.content == transcript[:MAX_REPLY_CHARS]
    assert got.finished["status"] == "complete" and got.finished["finish_reason"] == "length"
    assert got.finished["length"] == MAX_REPLY_CHARS
    # Upstream was closed as soon as the bound was reached: the rest was never read.
    gone = await simulator.await_disconnect(timeout=10)
    assert gone.tokens_sent < len(tokenize(transcript)) / 2


@pytest.mark.parametrize("stream", [True, False])
async def test_st15_openai_a_very_long_reply_is_cut_at_max_reply_chars(
    faults_server, simulator, user, stream
):
    simulator.token_delay = 0.0005
    transcript = long_reply(3000)
    got = await through_api(faults_server, user, "simulator/long?tokens=3000", stream=stream)
    assert got.finished == {"error": None, "finish": "length"}
    assert got.text == got.reply.content == transcript[:MAX_REPLY_CHARS]
    assert (await simulator.await_disconnect(timeout=10)).tokens_sent < len(tokenize(transcript))
    assert got.usage.outcome == "complete"
