"""Per-chunk CPU of the streaming client: its SSE parser alone, and a whole stream end to end.

    .venv/bin/python bench/parse_chunks.py

1. ``parser``: ``ChatStream._parse_line`` over realistic OpenRouter chunk lines (µs per chunk).
2. ``client``: this process's CPU per delta while ``open_stream`` drains 2,000-token replies from
   the simulator running in a *separate* process (so only client-side work is counted), compared
   with the SDK's own ``create(stream=True)`` path, which builds a pydantic model per chunk.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "streamchat"],
    DATABASES={},
    STREAMCHAT={"IDLE_TIMEOUT": 30.0, "FIRST_TOKEN_TIMEOUT": 30.0},
)
django.setup()

import openai  # noqa: E402

from streamchat.keys import KeyChoice  # noqa: E402
from streamchat.openrouter.client import ChatRequest, ChatStream, open_stream  # noqa: E402
from streamchat.openrouter.events import ContentDelta  # noqa: E402

CHUNK = (
    b'data: {"id":"gen-1739458867-kUKFjpDGCEBBvK6V46PX","provider":"OpenAI",'
    b'"model":"openai/gpt-4o-mini","object":"chat.completion.chunk","created":1739458867,'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":" word"},"finish_reason":null,'
    b'"native_finish_reason":null,"logprobs":null}],"system_fingerprint":"fp_72ed7ab54c"}'
)
KEY = "sk-or-v1-bench-key"
TOKENS = 2000
ROUNDS = 5


class _Headers(dict):  # type: ignore[type-arg]
    pass


class _FakeResponse:
    headers = _Headers({"x-generation-id": "gen-bench"})

    async def close(self) -> None:
        pass


async def bench_parser(n: int = 200_000) -> float:
    stream = ChatStream(_FakeResponse(), KeyChoice(None, KEY), "m", 1e18, 1e18)
    parse = stream._parse_line  # noqa: SLF001 - the hot path is what we measure
    for _ in range(1000):
        parse(CHUNK)
    started = time.process_time()
    for _ in range(n):
        parse(CHUNK)
    elapsed = time.process_time() - started
    await stream.aclose()
    return elapsed / n * 1e6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def drain_client(base_url: str) -> tuple[float, int]:
    settings.STREAMCHAT = {**settings.STREAMCHAT, "BASE_URL": base_url}
    from streamchat.conf import _merged

    _merged.cache_clear()
    request = ChatRequest(
        model=f"simulator/long?tokens={TOKENS}&delay_ms=0",
        messages=[{"role": "user", "content": "go"}],
    )
    cpu = 0.0
    deltas = 0
    for _ in range(ROUNDS):
        started = time.process_time()
        async with await open_stream(request, [KeyChoice(None, KEY)]) as stream:
            async for event in stream:
                if isinstance(event, ContentDelta):
                    deltas += 1
        cpu += time.process_time() - started
    return cpu, deltas


async def drain_sdk(base_url: str) -> tuple[float, int]:
    client = openai.AsyncOpenAI(api_key=KEY, base_url=base_url, max_retries=0)
    cpu = 0.0
    deltas = 0
    for _ in range(ROUNDS):
        started = time.process_time()
        stream = await client.chat.completions.create(
            model=f"simulator/long?tokens={TOKENS}&delay_ms=0",
            messages=[{"role": "user", "content": "go"}],
            stream=True,
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                deltas += 1
        cpu += time.process_time() - started
    await client.close()
    return cpu, deltas


def main() -> None:
    print(
        f"parser: {asyncio.run(bench_parser()):.2f} µs per chunk (_parse_line, one content delta)"
    )
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "openrouter_simulator",
            "--port",
            str(port),
            "--token-delay-ms",
            "0",
            "--first-token-delay-ms",
            "0",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()  # "OpenRouter simulator on ..."
        base_url = f"http://127.0.0.1:{port}/api/v1"
        asyncio.run(drain_client(base_url))  # warm-up
        for name, drain in (("client", drain_client), ("sdk create(stream=True)", drain_sdk)):
            cpu, deltas = asyncio.run(drain(base_url))
            print(f"{name}: {cpu / deltas * 1e6:.1f} µs CPU per delta ({deltas} deltas)")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
