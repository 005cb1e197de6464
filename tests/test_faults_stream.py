"""Upstream faults seen through the websocket (the demo's ASGI app, the simulator over HTTP): what
the user is shown, what is stored, and what went upstream. Stored text is compared with what the
simulator sent, byte for byte (``tokenize`` is how it cuts a reply into deltas)."""

from __future__ import annotations

import asyncio

import pytest

from streamchat.models import ChatModel, Message, Usage
from streamchat.simulator.replies import DEFAULT_REPLY, REASONING, long_reply, tokenize
from streamchat.streaming.hub import get_hub

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _upstream(simulator_settings, settings):
    settings.STREAMCHAT = {
        **settings.STREAMCHAT,
        "IDLE_TIMEOUT": 0.3,
        "BACKOFF_BASE": 0.01,
        "CHECKPOINT_MS": 100,
    }
    return simulator_settings


def sent_pieces(n: int, text: str = DEFAULT_REPLY) -> str:
    """The first ``n`` deltas the simulator sends of ``text``."""
    return "".join(tokenize(text)[:n])


async def ask(chat_socket, user, model: str, client_id: str = "c"):
    """Send one message with ``model``; (streamed text, finish frame, stored reply, its usage)."""
    await ChatModel.objects.acreate(model_id=model, enabled=True)
    socket = await chat_socket(user)
    await socket.send(
        {"type": "send", "client_id": client_id, "content": "Question", "model": model}
    )
    ack = await socket.recv_until("ack")
    text, finished = await socket.reply(ack["reply"], timeout=10)
    for run in list(get_hub().runs.values()):
        await asyncio.wait_for(run.done.wait(), 10)
    reply = await Message.objects.aget(pk=ack["reply"])
    usage = [u async for u in Usage.objects.filter(message=reply)]
    assert len(usage) == 1, usage  # one usage row per reply, however it ended
    await socket.close()
    return text, finished, reply, usage[0]


@pytest.mark.parametrize("comments", ["0", "1"])
async def test_st08_stall_after_ten_tokens_idle_timeout_keeps_text_no_retry(
    user, chat_socket, simulator, comments
):
    text, finished, reply, usage = await ask(
        chat_socket, user, f"simulator/stall?after=10&comments={comments}"
    )
    assert finished["status"] == "error" and finished["error"]["code"] == "idle_timeout"
    assert finished["error"]["message"]
    assert text == reply.content == sent_pieces(10)
    assert (reply.status, reply.error_code) == ("error", "idle_timeout")
    assert len(simulator.chat_requests) == 1  # no retry once text was shown
    gone = await simulator.await_disconnect(timeout=10)  # upstream was closed by us
    assert gone.tokens_sent == 10
    assert usage.outcome == "error" and usage.error_code == "idle_timeout"


async def test_st09_429_before_the_first_token_one_retry_one_reply(user, chat_socket, simulator):
    text, finished, reply, usage = await ask(
        chat_socket, user, "simulator/rate-limit?retry_after=0.2&times=1"
    )
    assert finished["status"] == "complete" and text == reply.content == DEFAULT_REPLY
    assert len(simulator.chat_requests) == 2  # the 429, then one retry
    assert usage.outcome == "complete"
    assert await Message.objects.filter(role="assistant").acount() == 1


async def test_st09_429_after_the_first_token_no_retry_error_text_kept(
    user, chat_socket, simulator
):
    text, finished, reply, usage = await ask(
        chat_socket, user, "simulator/error-mid?after=4&code=429&message=Rate+limit+exceeded"
    )
    assert finished["status"] == "error" and finished["error"]["code"] == "stream_error"
    assert "Rate limit exceeded" in finished["error"]["message"]
    assert text == reply.content == sent_pieces(4)
    assert len(simulator.chat_requests) == 1
    assert usage.outcome == "error"


@pytest.mark.parametrize("shape", ["top", "choice"])
@pytest.mark.parametrize("usage_after", ["0", "1"])
async def test_st10_mid_stream_error_chunk_keeps_text_and_records_usage(
    user, chat_socket, simulator, shape, usage_after
):
    text, finished, reply, usage = await ask(
        chat_socket,
        user,
        f"simulator/error-mid?after=6&shape={shape}&usage_after={usage_after}",
    )
    assert finished["status"] == "error" and finished["error"]["code"] == "stream_error"
    assert "Provider disconnected unexpectedly" in finished["error"]["message"]
    assert text == reply.content == sent_pieces(6)
    assert (reply.status, reply.error_code) == ("error", "stream_error")
    assert len(simulator.chat_requests) == 1
    assert usage.outcome == "error" and usage.error_code == "stream_error"
    if usage_after == "1":  # the usage OpenRouter sent after the error is the one recorded
        assert usage.cost_source == "reported" and usage.completion_tokens == 6
        assert finished["usage"]["completion_tokens"] == 6
    else:
        # None given: estimated from the text kept (then replaced by /generation's figures).
        assert usage.completion_tokens > 0


@pytest.mark.parametrize("mode", ["rst", "fin"])
async def test_st11_connection_reset_mid_stream_keeps_text(user, chat_socket, simulator, mode):
    text, finished, reply, usage = await ask(
        chat_socket, user, f"simulator/drop?after=7&mode={mode}"
    )
    assert finished["status"] == "error" and finished["error"]["code"] == "connection_error"
    assert finished["error"]["message"]
    assert text == reply.content == sent_pieces(7)
    assert len(simulator.chat_requests) == 1
    assert usage.outcome == "error" and usage.error_code == "connection_error"


async def test_st15_a_very_long_reply_is_stored_within_max_reply_chars(
    user, chat_socket, simulator, settings
):
    limit = 2000
    settings.STREAMCHAT = {**settings.STREAMCHAT, "MAX_REPLY_CHARS": limit}
    simulator.token_delay = 0.0005
    text, finished, reply, usage = await ask(chat_socket, user, "simulator/long?tokens=3000")
    transcript = long_reply(3000)
    assert len(transcript) > 4 * limit
    assert text == reply.content == transcript[:limit]
    assert finished["status"] == "complete" and finished["finish_reason"] == "length"
    assert finished["length"] == limit
    # Upstream was closed as soon as the bound was reached: the rest was never read.
    gone = await simulator.await_disconnect(timeout=10)
    assert gone.tokens_sent < len(tokenize(transcript)) / 2
    assert usage.outcome == "complete"


async def test_st15_reasoning_is_bounded_the_same_way(user, chat_socket, simulator, settings):
    settings.STREAMCHAT = {**settings.STREAMCHAT, "MAX_REPLY_CHARS": 30}
    _, finished, reply, _ = await ask(chat_socket, user, "simulator/reasoning")
    assert finished["finish_reason"] == "length"
    assert reply.reasoning == REASONING[:30] and reply.content == ""
