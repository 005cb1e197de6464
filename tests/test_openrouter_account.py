"""The account endpoints (/key, /models, /generation), sync and async, against the simulator."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import pytest

from streamchat.openrouter import account
from streamchat.openrouter.errors import OpenRouterError
from streamchat.simulator import Simulator

pytestmark = pytest.mark.once


def finished_generation(sim: Simulator, model: str = "openai/gpt-4o-mini") -> str:
    response = httpx.post(
        f"{sim.base_url}/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers={"Authorization": f"Bearer {sim.api_key}"},
    )
    return response.headers["x-generation-id"]


def test_get_key_info(simulator_settings: Simulator) -> None:
    sim = simulator_settings
    sim.add_key("sk-or-v1-limited-key", credits="5")
    info = account.get_key_info("sk-or-v1-limited-key")
    assert info["limit"] == 5 and info["limit_remaining"] == 5 and info["usage"] == 0
    assert "limited-key" not in info["label"]


async def test_aget_key_info_usage_grows(simulator_settings: Simulator) -> None:
    sim = simulator_settings
    before = await account.aget_key_info(sim.api_key)
    finished_generation(sim)
    after = await account.aget_key_info(sim.api_key)
    assert before["usage"] == 0 < after["usage"]


@pytest.mark.parametrize("secret", ["sk-or-v1-unknown-key-123456", ""])
def test_invalid_key(simulator_settings: Simulator, secret: str, settings: Any) -> None:
    with pytest.raises(OpenRouterError) as caught:
        account.get_key_info(secret or "sk-or-v1-revoked-0000000000")
    assert caught.value.code == "invalid_key" and caught.value.status == 401
    assert "unknown-key" not in caught.value.message


def test_list_models_without_a_key_sends_no_authorization(simulator_settings: Simulator) -> None:
    models = account.list_models()
    assert {"openai/gpt-4o-mini", "anthropic/claude-3.5-sonnet"} <= {m["id"] for m in models}
    assert all(isinstance(m["pricing"]["completion"], str) for m in models)
    recorded = simulator_settings.requests[-1]
    assert recorded.path == "/api/v1/models"
    assert "Authorization" not in recorded.headers


async def test_alist_models_with_a_key_sends_attribution(
    simulator_settings: Simulator, settings: Any
) -> None:
    settings.STREAMCHAT = {
        **settings.STREAMCHAT,
        "APP_URL": "https://chat.example/",
        "APP_TITLE": "Chat",
    }
    models = await account.alist_models(simulator_settings.api_key)
    assert models
    headers = simulator_settings.requests[-1].headers
    assert headers["Authorization"] == f"Bearer {simulator_settings.api_key}"
    assert headers["HTTP-Referer"] == "https://chat.example/"
    assert headers["X-OpenRouter-Title"] == headers["X-Title"] == "Chat"


async def test_aget_generation_waits_out_the_404_window(simulator_settings: Simulator) -> None:
    sim = simulator_settings
    sim.config.generation_delay = 3600  # 404 until the test ends the window below
    generation_id = finished_generation(sim)

    def lookups() -> int:
        return sum(1 for r in sim.requests if r.path.endswith("/generation"))

    waiting = asyncio.create_task(account.aget_generation(generation_id, sim.api_key, wait=30))
    while lookups() < 2:  # asked, got a 404, asked again: it waits the window out
        assert not waiting.done(), waiting
        await asyncio.sleep(0.01)
    sim.config.generation_delay = 0  # the record appears
    data = await asyncio.wait_for(waiting, timeout=30)
    assert data["id"] == generation_id and data["cancelled"] is False
    assert data["total_cost"] > 0 and data["tokens_completion"] > 0
    assert lookups() >= 3


def test_get_generation_gives_up_with_not_found(simulator_settings: Simulator) -> None:
    sim = simulator_settings
    sim.config.generation_delay = 10
    generation_id = finished_generation(sim)
    with pytest.raises(OpenRouterError) as caught:
        account.get_generation(generation_id, sim.api_key, wait=0.3)
    assert caught.value.code == "not_found"
    sim.config.generation_delay = 0
    assert account.get_generation(generation_id, sim.api_key)["id"] == generation_id


async def test_aget_generation_invalid_key_is_not_retried(simulator_settings: Simulator) -> None:
    with pytest.raises(OpenRouterError) as caught:
        await account.aget_generation("gen-1-x", "sk-or-v1-nobody-000000", wait=5)
    assert caught.value.code == "invalid_key"
    lookups = [r for r in simulator_settings.requests if r.path.endswith("/generation")]
    assert len(lookups) == 1  # not retried within the 5 s it may wait for a record


def test_connection_refused(settings: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings.STREAMCHAT = {**settings.STREAMCHAT, "BASE_URL": f"http://127.0.0.1:{port}/api/v1"}
    with pytest.raises(OpenRouterError) as caught:
        account.list_models()
    assert caught.value.code == "connection_error" and caught.value.retriable
