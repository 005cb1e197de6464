"""The OpenRouter simulator speaks OpenRouter's wire protocol (raw HTTP, no client of ours)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from streamchat.simulator import Simulator
from streamchat.simulator.replies import DEFAULT_REPLY, XSS_REPLY

pytestmark = pytest.mark.once

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = [{"role": "user", "content": "Hello there"}]


def post(sim: Simulator, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or sim.api_key}"}
    return httpx.post(f"{sim.base_url}/chat/completions", json=body, headers=headers, timeout=10)


def events(response: httpx.Response) -> tuple[list[dict[str, Any]], list[str], bool]:
    """(data events, comment lines, [DONE] seen) of an SSE body."""
    data, comments, done = [], [], False
    for line in response.text.split("\n"):
        if line.startswith(":"):
            comments.append(line)
        elif line == "data: [DONE]":
            done = True
        elif line.startswith("data: "):
            data.append(orjson.loads(line[6:]))
    return data, comments, done


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(
        (c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices")
    )


def test_missing_and_unknown_keys_get_openrouters_401(simulator: Simulator) -> None:
    no_header = httpx.post(f"{simulator.base_url}/chat/completions", json={"messages": MESSAGES})
    assert no_header.status_code == 401
    assert no_header.json()["error"] == {"code": 401, "message": "No auth credentials found"}
    unknown = post(simulator, {"messages": MESSAGES}, key="sk-or-v1-nobody")
    assert unknown.status_code == 401
    assert unknown.json()["error"]["message"] == "User not found."


def test_key_out_of_credits_gets_402(simulator: Simulator) -> None:
    simulator.add_key("sk-or-v1-poor", credits=0)
    response = post(
        simulator, {"model": "openai/gpt-4o", "messages": MESSAGES}, key="sk-or-v1-poor"
    )
    assert response.status_code == 402
    assert response.json()["error"]["metadata"]["limit_source"] == "openrouter_credits"


def test_default_stream_has_openrouters_shape(simulator: Simulator) -> None:
    response = post(
        simulator, {"model": "openai/gpt-4o-mini", "messages": MESSAGES, "stream": True}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    generation_id = response.headers["x-generation-id"]
    chunks, _comments, done = events(response)
    assert done
    assert {c["id"] for c in chunks} == {generation_id}
    assert len({c["created"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["provider"] == "OpenAI" for c in chunks)
    assert text_of(chunks) == DEFAULT_REPLY
    assert "```python" in DEFAULT_REPLY and "\n1. " in DEFAULT_REPLY
    finishes = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [f["choices"][0]["finish_reason"] for f in finishes] == ["stop"]


@pytest.mark.parametrize("variant", ["A", "B", "C"])
def test_usage_variants(simulator: Simulator, variant: str) -> None:
    model = f"simulator/echo?usage={variant}"
    response = post(simulator, {"model": model, "messages": MESSAGES, "stream": True})
    chunks, _, done = events(response)
    assert done
    finish_at = next(
        i for i, c in enumerate(chunks) if c["choices"] and c["choices"][0]["finish_reason"]
    )
    usage_chunks = [c for c in chunks if "usage" in c]
    assert len(usage_chunks) == 1
    usage_chunk = usage_chunks[0]
    assert chunks.index(usage_chunk) == finish_at + 1 == len(chunks) - 1
    if variant == "A":
        assert usage_chunk["choices"] == []
    elif variant == "B":
        assert usage_chunk["choices"][0]["finish_reason"] is None
    else:
        assert usage_chunk["choices"][0]["finish_reason"] == "stop"
    usage = usage_chunk["usage"]
    # "Hello there" -> 3 pieces ("Hell", "o", " ther", "e" = 4); prompt 4 + 4 = 8; price 1e-6 / 2e-6
    assert usage["completion_tokens"] == 4
    assert usage["prompt_tokens"] == 8
    assert Decimal(str(usage["cost"])) == Decimal("0.000008") + Decimal("0.000008")


def test_scripted_reply_and_echo(simulator: Simulator) -> None:
    simulator.next_reply("Scripted **one**")
    first = post(simulator, {"model": "openai/gpt-4o", "messages": MESSAGES, "stream": True})
    second = post(simulator, {"model": "simulator/echo", "messages": MESSAGES, "stream": True})
    assert text_of(events(first)[0]) == "Scripted **one**"
    assert text_of(events(second)[0]) == "Hello there"


def test_non_streaming_reply(simulator: Simulator) -> None:
    response = post(simulator, {"model": "anthropic/claude-3.5-sonnet", "messages": MESSAGES})
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == DEFAULT_REPLY
    assert body["usage"]["completion_tokens"] > 50
    assert response.headers["x-generation-id"] == body["id"]


def test_unknown_and_unprefixed_models_get_400(simulator: Simulator) -> None:
    for model in ("gpt-4o", "openai/nope", "simulator/no-such-scenario"):
        response = post(simulator, {"model": model, "messages": MESSAGES, "stream": True})
        assert response.status_code == 400
        assert response.json()["error"]["message"] == f"{model} is not a valid model ID"


def test_fallback_models_are_honoured(simulator: Simulator) -> None:
    body = {
        "model": "simulator/server-error",
        "models": ["nope/unknown", "openai/gpt-4o"],
        "messages": MESSAGES,
        "stream": True,
    }
    chunks, _, done = events(post(simulator, body))
    assert done and {c["model"] for c in chunks} == {"openai/gpt-4o"}


def test_rate_limit_times_then_success(simulator: Simulator) -> None:
    model = "simulator/rate-limit?retry_after=7&times=1"
    first = post(simulator, {"model": model, "messages": MESSAGES})
    assert first.status_code == 429
    assert first.headers["retry-after"] == "7"
    assert first.json()["error"]["metadata"]["headers"]["X-RateLimit-Remaining"] == "0"
    assert post(simulator, {"model": model, "messages": MESSAGES}).status_code == 200


def test_pre_stream_error_bodies(simulator: Simulator) -> None:
    moderated = post(simulator, {"model": "simulator/moderation", "messages": MESSAGES})
    assert moderated.status_code == 403
    assert moderated.json()["error"]["metadata"]["flagged_input"] == "Hello there"
    budget = post(
        simulator, {"model": "simulator/in-flight-budget?retry_after=2", "messages": MESSAGES}
    )
    assert budget.status_code == 402 and budget.headers["retry-after"] == "2"
    assert budget.json()["error"]["metadata"]["limit_source"] == "openrouter_in_flight_budget"
    for status in (500, 502, 503):
        model = f"simulator/server-error?status={status}"
        assert post(simulator, {"model": model, "messages": MESSAGES}).status_code == status
    assert post(simulator, {"model": "simulator/timeout", "messages": MESSAGES}).status_code == 408


def test_keepalive_comments_before_first_token(simulator: Simulator) -> None:
    simulator.config.keepalive_interval = 0.02
    model = "simulator/slow-first?delay=0.15"
    chunks, comments, done = events(
        post(simulator, {"model": model, "messages": MESSAGES, "stream": True})
    )
    assert done and len(comments) >= 3
    assert set(comments) == {": OPENROUTER PROCESSING"}


@pytest.mark.parametrize("shape", ["top", "choice"])
def test_mid_stream_error_shapes(simulator: Simulator, shape: str) -> None:
    model = f"simulator/error-mid?after=3&shape={shape}&code=429"
    chunks, _, done = events(
        post(simulator, {"model": model, "messages": MESSAGES, "stream": True})
    )
    assert not done
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "error"
    error = last["error"] if shape == "top" else last["choices"][0]["error"]
    assert error["code"] == 429
    assert text_of(chunks) == "Here is a"


def test_cut_ends_without_done_or_finish(simulator: Simulator) -> None:
    chunks, _, done = events(
        post(simulator, {"model": "simulator/cut?after=2", "messages": MESSAGES, "stream": True})
    )
    assert not done
    assert all(not c["choices"][0]["finish_reason"] for c in chunks)


@pytest.mark.parametrize("mode", ["rst", "fin"])
def test_drop_breaks_the_connection(simulator: Simulator, mode: str) -> None:
    body = {"model": f"simulator/drop?after=2&mode={mode}", "messages": MESSAGES, "stream": True}
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        post(simulator, body)


def test_disconnect_is_recorded_and_generation_cancelled(simulator: Simulator) -> None:
    body = {"model": "simulator/stall?after=3&comments=1", "messages": MESSAGES, "stream": True}
    headers = {"Authorization": f"Bearer {simulator.api_key}"}
    with httpx.stream(
        "POST", f"{simulator.base_url}/chat/completions", json=body, headers=headers
    ) as r:
        generation_id = r.headers["x-generation-id"]
        lines = r.iter_lines()
        while not next(lines).startswith(":"):  # the stall began
            pass
    gone = simulator.wait_for_disconnect(timeout=10)
    assert gone.generation_id == generation_id and gone.tokens_sent == 3
    record = httpx.get(
        f"{simulator.base_url}/generation", params={"id": generation_id}, headers=headers
    )
    assert record.json()["data"]["cancelled"] is True
    assert record.json()["data"]["tokens_completion"] == 3


def test_generation_answers_404_then_the_record(simulator: Simulator) -> None:
    simulator.config.generation_delay = 3600  # 404 until the window is ended below
    headers = {"Authorization": f"Bearer {simulator.api_key}"}
    response = post(
        simulator, {"model": "openai/gpt-4o-mini", "messages": MESSAGES, "stream": True}
    )
    generation_id = response.headers["x-generation-id"]
    url = f"{simulator.base_url}/generation"
    assert httpx.get(url, params={"id": generation_id}, headers=headers).status_code == 404
    simulator.config.generation_delay = 0
    data = httpx.get(url, params={"id": generation_id}, headers=headers).json()["data"]
    assert data["id"] == generation_id and data["cancelled"] is False and data["streamed"] is True
    usage = events(response)[0][-1]["usage"]
    assert Decimal(str(data["total_cost"])) == Decimal(str(usage["cost"]))


def test_key_usage_grows_and_models_have_string_prices(simulator: Simulator) -> None:
    headers = {"Authorization": f"Bearer {simulator.api_key}"}
    before = httpx.get(f"{simulator.base_url}/key", headers=headers).json()["data"]
    post(simulator, {"model": "openai/gpt-4o", "messages": MESSAGES})
    after = httpx.get(f"{simulator.base_url}/auth/key", headers=headers).json()["data"]
    assert before["usage"] == 0 and after["usage"] > 0
    models = httpx.get(f"{simulator.base_url}/models").json()["data"]
    assert all(isinstance(m["pricing"]["prompt"], str) for m in models)
    assert {"openai/gpt-4o-mini", "anthropic/claude-3.5-sonnet"} <= {m["id"] for m in models}


def test_requests_are_recorded(simulator: Simulator) -> None:
    post(simulator, {"model": "openai/gpt-4o", "messages": MESSAGES, "models": ["x/y"]})
    recorded = simulator.chat_requests[-1]
    assert recorded.json["models"] == ["x/y"]
    assert recorded.headers["Authorization"] == f"Bearer {simulator.api_key}"


def test_xss_reply_is_split_across_deltas(simulator: Simulator) -> None:
    chunks, _, _ = events(
        post(simulator, {"model": "simulator/xss", "messages": MESSAGES, "stream": True})
    )
    assert text_of(chunks) == XSS_REPLY
    assert not any(
        "<script>" in (c["choices"][0]["delta"].get("content") or "")
        for c in chunks
        if c["choices"]
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_management_command_serves_the_demo_key() -> None:
    port = free_port()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "manage.py", "openrouter_simulator", "--port", str(port)]
    command += ["--token-delay-ms", "0", "--first-token-delay-ms", "0"]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        assert process.stdout is not None
        assert b"OpenRouter simulator on" in process.stdout.readline()
        base = f"http://127.0.0.1:{port}/api/v1"
        for key, status in [
            ("sk-or-v1-simulator-demo-key", 200),
            ("sk-or-v1-demo-invalid", 401),
            ("sk-or-v1-demo-broke", 402),
            ("not-an-openrouter-key", 401),
        ]:
            response = httpx.post(
                f"{base}/chat/completions",
                json={"model": "openai/gpt-4o-mini", "messages": MESSAGES},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert response.status_code == status, key
    finally:
        process.terminate()
        process.wait(10)
