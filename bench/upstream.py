"""A minimal OpenRouter-shaped upstream with a fixed schedule, for the benchmark.

    python -m bench.upstream --port 8765 [--tokens 200] [--rate 100]

``POST /api/v1/chat/completions`` (streaming) answers at once with ``text/event-stream``: a
``: OPENROUTER PROCESSING`` comment, then one content chunk per token (``"tok "``), token ``i`` due
at ``start + i / rate``, a chunk with ``finish_reason: "stop"``, a usage chunk (``choices: []``)
and ``data: [DONE]``. A stream that falls behind its schedule (a busy core) writes the tokens that
are due together, so the schedule, not the write rate, sets the pace. The last user message may say
``tokens=N`` to ask for N tokens instead of the default. ``GET /bench/stats`` answers the counters
(content deltas sent, streams started, finished and cut off); ``/api/v1/models`` and
``/api/v1/key`` answer minimally in case the app asks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import time
from typing import Any

from aiohttp import web

TOKEN = "tok "
MODEL = "openai/gpt-4o-mini"
_TOKENS_ASKED = re.compile(r"tokens=(\d{1,6})")

CONFIG: dict[str, Any] = {"tokens": 200, "rate": 100.0}
STATS: dict[str, int] = {"deltas": 0, "streams": 0, "finished": 0, "aborted": 0, "active": 0}


def _data(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _tokens_asked(body: dict[str, Any], default: int) -> int:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(str(part.get("text", "")) for part in content)
            match = _TOKENS_ASKED.search(str(content))
            return int(match.group(1)) if match else default
    return default


async def chat_completions(request: web.Request) -> web.StreamResponse:
    try:
        body = await request.json()
    except ValueError:
        return web.json_response({"error": {"code": 400, "message": "bad JSON"}}, status=400)
    if not body.get("stream"):
        return web.json_response(
            {"error": {"code": 400, "message": "the bench upstream streams only"}}, status=400
        )
    tokens = _tokens_asked(body, CONFIG["tokens"])
    rate = CONFIG["rate"]
    gen_id = f"gen-{int(time.time())}-{secrets.token_hex(10)}"
    created = int(time.time())
    model = body.get("model") or MODEL
    head = {"id": gen_id, "object": "chat.completion.chunk", "created": created, "model": model}
    chunk = _data(
        {
            **head,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": TOKEN},
                    "finish_reason": None,
                }
            ],
        }
    )
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Generation-Id": gen_id,
        }
    )
    STATS["streams"] += 1
    STATS["active"] += 1
    sent = 0
    try:
        await response.prepare(request)
        await response.write(b": OPENROUTER PROCESSING\n\n")
        loop = asyncio.get_running_loop()
        start = loop.time()
        while sent < tokens:
            due = min(tokens, int((loop.time() - start) * rate) + 1)
            if due > sent:
                await response.write(chunk * (due - sent))
                STATS["deltas"] += due - sent
                sent = due
            if sent < tokens:
                await asyncio.sleep(max(0.0, start + sent / rate - loop.time()))
        finish = {"index": 0, "delta": {"role": "assistant", "content": ""}}
        prompt = 10
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": tokens,
            "total_tokens": prompt + tokens,
            "cost": 0.0001,
        }
        await response.write(
            _data({**head, "choices": [{**finish, "finish_reason": "stop"}]})
            + _data({**head, "choices": [], "usage": usage})
            + b"data: [DONE]\n\n"
        )
        await response.write_eof()
        STATS["finished"] += 1
    except (asyncio.CancelledError, ConnectionError):
        STATS["aborted"] += 1
        raise
    finally:
        STATS["active"] -= 1
    return response


async def stats(request: web.Request) -> web.Response:
    return web.json_response({**STATS, "pid": os.getpid()})


async def models(request: web.Request) -> web.Response:
    entry = {
        "id": MODEL,
        "name": "GPT-4o mini (bench)",
        "created": 1721260800,
        "context_length": 128000,
        "pricing": {"prompt": "0.00000015", "completion": "0.0000006"},
    }
    return web.json_response({"data": [entry]})


async def key_info(request: web.Request) -> web.Response:
    data = {
        "label": "bench",
        "limit": None,
        "limit_remaining": None,
        "usage": 0,
        "is_free_tier": False,
    }
    return web.json_response({"data": data})


def create_app(tokens: int, rate: float) -> web.Application:
    app = web.Application(client_max_size=8 * 1024 * 1024)
    CONFIG.update(tokens=tokens, rate=rate)
    app.router.add_post("/api/v1/chat/completions", chat_completions)
    app.router.add_get("/api/v1/models", models)
    app.router.add_get("/api/v1/key", key_info)
    app.router.add_get("/api/v1/auth/key", key_info)
    app.router.add_get("/bench/stats", stats)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=200, help="tokens per reply by default")
    parser.add_argument("--rate", type=float, default=100.0, help="tokens per second")
    args = parser.parse_args()
    web.run_app(
        create_app(args.tokens, args.rate),
        host=args.host,
        port=args.port,
        print=None,
        access_log=None,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
