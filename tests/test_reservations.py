"""How much a token or spend budget reserves for a reply, and refusals that say what would fit:
real sends over the websocket (the demo's ASGI app) and the OpenAI-compatible API (a live Daphne
and the ``openai`` SDK), with the simulator as OpenRouter. Run on SQLite and PostgreSQL.

The reservation is the ``max_tokens`` sent upstream when the request or the admin set one (the
smaller, never above the model's completion cap), else the smaller of the model's completion cap
and ``RESERVE_MAX_TOKENS``; never more than the context window leaves after the prompt.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import openai
import pytest

from streamchat.models import ChatModel, RateLimit, Reservation, Usage
from streamchat.simulator.replies import DEFAULT_REPLY
from streamchat.streaming.hub import get_hub
from streamchat.streaming.plan import reserved_completion_tokens
from streamchat.streaming.store import ModelChoice
from tests.http_helpers import personal_token

pytestmark = [pytest.mark.django_db(transaction=True)]

# What "Sync from OpenRouter" stores for gpt-4o from the simulator's /models.
GPT_4O = {
    "model_id": "openai/gpt-4o",
    "context_length": 128_000,
    "max_completion_tokens": 16_384,
    "prompt_price": Decimal("2.5"),
    "completion_price": Decimal("10"),
}


@pytest.mark.parametrize(
    ("cap", "model", "reserve", "prompt", "expected"),
    [
        (None, {"context_length": 128_000}, 4096, 100, 4096),  # never the whole window
        (None, {"context_length": 128_000, "max_completion_tokens": 16_384}, 4096, 100, 4096),
        (None, {"max_completion_tokens": 2048}, 4096, 100, 2048),  # the model's cap is smaller
        (None, {"max_completion_tokens": 16_384}, 50_000, 100, 16_384),
        (1000, {"max_completion_tokens": 16_384}, 4096, 100, 1000),  # the cap sent upstream
        (8000, {}, 4096, 100, 8000),  # sent upstream, so the reply cannot pass it
        (None, {"context_length": 1000}, 4096, 900, 100),  # what the window leaves
        (None, {"context_length": 1000}, 4096, 5000, 1),
        (None, {}, None, 100, 4096),  # the setting unset: its default
    ],
)
def test_what_a_reply_reserves(settings, cap, model, reserve, prompt, expected):
    settings.STREAMCHAT = {**settings.STREAMCHAT, "RESERVE_MAX_TOKENS": reserve}
    choice = ModelChoice("x/y", **model)
    assert reserved_completion_tokens(cap, choice, prompt) == expected


async def settle_runs() -> None:
    for run in list(get_hub().runs.values()):
        await asyncio.wait_for(run.done.wait(), 10)


async def answer(socket: Any, client_id: str) -> dict[str, Any]:
    """The ack or error frame answering the send ``client_id``."""
    while True:
        frame = await socket.recv(5)
        if frame["type"] in ("ack", "error") and frame.get("client_id") == client_id:
            return frame


async def send(socket: Any, client_id: str, **fields: Any) -> dict[str, Any]:
    await socket.send({"type": "send", "client_id": client_id, "content": "Question", **fields})
    return await answer(socket, client_id)


# -- over the websocket -------------------------------------------------------------------------


async def test_a_50k_daily_budget_admits_gpt_4o_and_reserves_4096_not_its_window(
    user, chat_socket, simulator_settings
):
    await ChatModel.objects.acreate(**GPT_4O, enabled=True, is_default=True)
    await RateLimit.objects.acreate(scope="default", tokens_per_day=50_000)
    socket = await chat_socket(user)

    ack = await send(socket, "one")
    assert ack["type"] == "ack", ack
    text, finished = await socket.reply(ack["reply"])
    await settle_runs()

    assert finished["status"] == "complete" and text == DEFAULT_REPLY
    reservation = await Reservation.objects.aget(user=user)
    prompt = reservation.reserved_tokens - 4096
    assert 0 < prompt < 100  # "Question": the reply's share is RESERVE_MAX_TOKENS
    assert "max_tokens" not in simulator_settings.chat_requests[-1].json  # the reply is not cut
    await socket.close()


async def test_the_smallest_cap_is_sent_and_reserved(user, chat_socket, simulator_settings):
    # The admin's max tokens caps a request that asks for more; a request may ask for less.
    await ChatModel.objects.acreate(**GPT_4O, max_tokens=1000, enabled=True, is_default=True)
    await RateLimit.objects.acreate(scope="user", user=user, tokens_per_day=50_000)
    socket = await chat_socket(user)
    for client_id, asked, expected in [("more", 2000, 1000), ("less", 300, 300)]:
        ack = await send(socket, client_id, max_tokens=asked)
        await socket.reply(ack["reply"])
        await settle_runs()
        assert simulator_settings.chat_requests[-1].json["max_tokens"] == expected
        reservation = await Reservation.objects.filter(message_id=ack["reply"]).aget()
        assert reservation.reserved_tokens - expected < 100  # the prompt's estimate
    await socket.close()


async def test_a_model_cap_below_the_setting_is_what_is_reserved(
    user, chat_socket, simulator_settings, settings
):
    settings.STREAMCHAT = {**settings.STREAMCHAT, "RESERVE_MAX_TOKENS": 100_000}
    await ChatModel.objects.acreate(
        model_id="anthropic/claude-3.5-sonnet",
        context_length=200_000,
        max_completion_tokens=8192,
        enabled=True,
        is_default=True,
    )
    await RateLimit.objects.acreate(scope="user", user=user, tokens_per_day=1_000_000)
    socket = await chat_socket(user)
    ack = await send(socket, "capped")
    await socket.reply(ack["reply"])
    await settle_runs()
    reservation = await Reservation.objects.aget(user=user)
    assert 8192 < reservation.reserved_tokens < 8192 + 100
    await socket.close()


async def test_a_refusal_says_which_max_tokens_fits_and_that_one_is_admitted(
    user, chat_socket, simulator_settings
):
    await ChatModel.objects.acreate(**GPT_4O, enabled=True, is_default=True)
    await RateLimit.objects.acreate(scope="user", user=user, tokens_per_day=3000)
    socket = await chat_socket(user)

    refused = await send(socket, "big")

    assert refused["type"] == "error" and refused["code"] == "rate_limited"
    fits = refused["fits_max_tokens"]
    assert 2900 < fits < 3000  # the limit less the prompt
    assert "could use up to 4,096 tokens" in refused["message"]
    assert f"it fits with max_tokens ≤ {fits:,}" in refused["message"]
    assert "shorter reply" not in refused["message"]
    assert refused.get("retry_after") is None  # waiting would not help; a smaller reply does

    too_big = await send(socket, "still-big", max_tokens=fits + 1)
    assert too_big["type"] == "error" and too_big["fits_max_tokens"] == fits
    ack = await send(socket, "fits", max_tokens=fits)
    assert ack["type"] == "ack", ack
    _, finished = await socket.reply(ack["reply"])
    await settle_runs()
    assert finished["status"] == "complete"
    assert simulator_settings.chat_requests[-1].json["max_tokens"] == fits
    assert len(simulator_settings.chat_requests) == 1  # the refusals never reached upstream
    refusals = [u async for u in Usage.objects.filter(outcome="refused")]
    assert [u.error_code for u in refusals] == ["tokens_per_day", "tokens_per_day"]
    await socket.close()


async def test_a_spend_refusal_says_which_max_tokens_fits(user, chat_socket, simulator_settings):
    # $10 per million completion tokens: 4096 tokens cost up to $0.04; $0.01 leaves ~1000.
    await ChatModel.objects.acreate(**GPT_4O, enabled=True, is_default=True)
    await RateLimit.objects.acreate(scope="user", user=user, spend_per_month=Decimal("0.01"))
    socket = await chat_socket(user)

    refused = await send(socket, "dear")

    assert refused["code"] == "rate_limited"
    fits = refused["fits_max_tokens"]
    assert 900 < fits < 1000 and f"max_tokens ≤ {fits:,}" in refused["message"]
    ack = await send(socket, "cheap", max_tokens=fits)
    assert ack["type"] == "ack", ack
    await socket.reply(ack["reply"])
    await settle_runs()
    reservation = await Reservation.objects.aget(user=user)
    assert reservation.reserved_cost <= Decimal("0.01")
    await socket.close()


async def test_a_refusal_that_a_smaller_reply_cannot_help_has_no_fit(
    user, chat_socket, simulator_settings
):
    await ChatModel.objects.acreate(**GPT_4O, enabled=True, is_default=True)
    await RateLimit.objects.acreate(
        scope="user", user=user, tokens_per_day=3000, requests_per_day=1
    )
    socket = await chat_socket(user)
    ack = await send(socket, "first", max_tokens=100)
    await socket.reply(ack["reply"])
    await settle_runs()

    refused = await send(socket, "second")  # the daily request limit: max_tokens cannot help

    assert refused["code"] == "rate_limited" and "fits_max_tokens" not in refused
    await socket.close()


# -- over the OpenAI-compatible API ---------------------------------------------------------------


@pytest.fixture
def sdk(http_server: Any, user: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{http_server.url}/chat/v1", api_key=personal_token(user), max_retries=0
    )


def test_api_refusal_carries_the_fit_and_a_request_within_it_is_admitted(sdk, user, simulator):
    ChatModel.objects.create(**GPT_4O, enabled=True, is_default=True)
    RateLimit.objects.create(scope="user", user=user, tokens_per_day=3000)
    question = [{"role": "user", "content": "Hello there"}]

    with pytest.raises(openai.RateLimitError) as info:
        sdk.chat.completions.create(model="openai/gpt-4o", messages=question)

    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "rate_limited"
    fits = body["fits_max_tokens"]
    assert 2900 < fits < 3000 and f"max_tokens ≤ {fits:,}" in body["message"]
    completion = sdk.chat.completions.create(
        model="openai/gpt-4o", messages=question, max_tokens=fits
    )
    assert completion.choices[0].message.content == DEFAULT_REPLY
    assert simulator.chat_requests[-1].json["max_tokens"] == fits
    assert len(simulator.chat_requests) == 1
    assert Usage.objects.filter(outcome="complete").count() == 1


def test_api_without_max_tokens_reserves_the_setting_not_the_window(sdk, user, simulator):
    ChatModel.objects.create(**GPT_4O, enabled=True, is_default=True)
    RateLimit.objects.create(scope="user", user=user, tokens_per_day=50_000)
    completion = sdk.chat.completions.create(
        model="openai/gpt-4o", messages=[{"role": "user", "content": "Hello there"}]
    )
    assert completion.choices[0].message.content == DEFAULT_REPLY
    reservation = Reservation.objects.get(user=user)
    assert 4096 < reservation.reserved_tokens < 4096 + 100
    assert "max_tokens" not in simulator.chat_requests[-1].json
