"""Errors before the first token (HTTP 200, then an error event or a reset, before any text) are
retried like a 5xx before the stream; after the first token they are not. Seen through the
websocket (the demo's ASGI app) and the OpenAI-compatible API (a live Daphne, the ``openai``
SDK), with the simulator as OpenRouter: one stored reply, one usage row, the upstream calls
counted. Run on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from streamchat.models import ChatModel, Message, Usage
from streamchat.simulator.replies import DEFAULT_REPLY, tokenize
from streamchat.streaming.hub import get_hub
from tests.http_helpers import personal_token

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _upstream(simulator_settings: Any, settings: Any) -> Any:
    settings.STREAMCHAT = {**settings.STREAMCHAT, "BACKOFF_BASE": 0.01, "MAX_RETRIES": 2}
    return simulator_settings


async def ask(chat_socket: Any, user: Any, model: str) -> tuple[str, dict[str, Any], Message]:
    """Send one message with ``model``: (streamed text, finish frame, the stored reply)."""
    await ChatModel.objects.acreate(model_id=model, enabled=True)
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "c", "content": "Question", "model": model})
    ack = await socket.recv_until("ack")
    text, finished = await socket.reply(ack["reply"], timeout=10)
    for run in list(get_hub().runs.values()):
        await asyncio.wait_for(run.done.wait(), 10)
    await socket.close()
    assert await Message.objects.filter(role="assistant").acount() == 1
    return text, finished, await Message.objects.aget(pk=ack["reply"])


@pytest.mark.parametrize("shape", ["top", "choice"])
async def test_an_error_event_before_the_first_token_is_retried_once_then_the_reply(
    user, chat_socket, simulator, shape
):
    text, finished, reply = await ask(
        chat_socket, user, f"simulator/error-mid?after=0&shape={shape}&usage_after=1&times=1"
    )
    assert finished["status"] == "complete" and not finished.get("error")
    assert text == reply.content == DEFAULT_REPLY
    assert len(simulator.chat_requests) == 2  # the error, then one retry
    (usage,) = [u async for u in Usage.objects.all()]  # the reply's usage only
    assert (usage.outcome, usage.message_id) == ("complete", reply.pk)
    assert usage.completion_tokens == len(tokenize(DEFAULT_REPLY))


async def test_an_error_event_before_any_text_says_so_when_retries_run_out(
    user, chat_socket, simulator
):
    text, finished, reply = await ask(chat_socket, user, "simulator/error-mid?after=0&code=503")
    assert finished["status"] == "error" and finished["error"]["code"] == "stream_error"
    message = finished["error"]["message"]
    assert "before replying" in message and "mid-reply" not in message
    assert text == reply.content == ""
    assert len(simulator.chat_requests) == 3  # the first attempt and MAX_RETRIES, as for a 503
    (usage,) = [u async for u in Usage.objects.all()]
    assert (usage.outcome, usage.error_code) == ("error", "stream_error")


async def test_an_error_event_after_the_first_token_is_not_retried(user, chat_socket, simulator):
    text, finished, reply = await ask(
        chat_socket, user, "simulator/error-mid?after=3&code=503&times=1"
    )
    assert finished["status"] == "error" and "mid-reply" in finished["error"]["message"]
    assert text == reply.content == "".join(tokenize(DEFAULT_REPLY)[:3])
    assert len(simulator.chat_requests) == 1
    assert await Usage.objects.acount() == 1


async def test_a_reset_before_the_first_token_is_retried(user, chat_socket, simulator):
    text, finished, _ = await ask(chat_socket, user, "simulator/drop?after=0&times=1")
    assert finished["status"] == "complete" and text == DEFAULT_REPLY
    assert len(simulator.chat_requests) == 2
    assert await Usage.objects.acount() == 1


# -- over the OpenAI-compatible API ---------------------------------------------------------------


@pytest.fixture
def sdk(http_server: Any, user: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{http_server.url}/chat/v1", api_key=personal_token(user), max_retries=0
    )


QUESTION = [{"role": "user", "content": "Hello there"}]


@pytest.mark.parametrize("stream", [True, False])
def test_api_an_error_event_before_the_first_token_is_retried(sdk, simulator, stream):
    model = f"simulator/error-mid?after=0&code=server_error&times=1&n={int(stream)}"
    ChatModel.objects.create(model_id=model, enabled=True)
    if stream:
        chunks = list(sdk.chat.completions.create(model=model, messages=QUESTION, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        text = (
            sdk.chat.completions.create(model=model, messages=QUESTION).choices[0].message.content
        )
    assert text == DEFAULT_REPLY
    assert len(simulator.chat_requests) == 2
    (usage,) = Usage.objects.all()
    assert (usage.source, usage.outcome) == ("api", "complete")


def test_api_an_error_event_before_any_text_is_an_error_that_says_so(sdk, simulator):
    model = "simulator/error-mid?after=0&code=400&message=max+tokens+limit+exceeded"
    ChatModel.objects.create(model_id=model, enabled=True)
    with pytest.raises(openai.APIError) as info:
        list(sdk.chat.completions.create(model=model, messages=QUESTION, stream=True))
    assert "before replying" in info.value.message and "mid-reply" not in info.value.message
    assert len(simulator.chat_requests) == 1  # a 400 is not what a retry fixes
    assert Usage.objects.get().error_code == "stream_error"
