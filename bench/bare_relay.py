"""The bare relay the benchmark compares streamchat with: no auth, no database, no limits.

    BENCH_UPSTREAM_URL=http://127.0.0.1:8765/api/v1 python -m daphne bench.bare_relay:application

A Channels consumer that, on ``{"type": "send", "content": ...}``, streams the upstream reply with
the ``openai`` SDK (``chat.completions.create(stream=True)``, one shared client per process) and
sends one ``{"type": "delta", "text": ...}`` frame per upstream delta, then ``reply.finished``:
the frame shapes of streamchat's websocket protocol, so one load client measures both.
"""

from __future__ import annotations

import asyncio
import json
import os

import django
from django.conf import settings

if not settings.configured:
    settings.configure(INSTALLED_APPS=["channels"], CHANNEL_LAYERS={}, USE_TZ=True)
    django.setup()

import openai  # noqa: E402
from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

BASE_URL = os.environ.get("BENCH_UPSTREAM_URL", "http://127.0.0.1:8765/api/v1")
MODEL = "openai/gpt-4o-mini"
_client: openai.AsyncOpenAI | None = None


def client() -> openai.AsyncOpenAI:
    global _client
    if _client is None:  # one per process, made on the server's event loop
        _client = openai.AsyncOpenAI(
            base_url=BASE_URL,
            api_key="sk-or-v1-bench",
            max_retries=0,
            timeout=openai.Timeout(600.0, connect=10.0),  # streamchat's defaults
        )
    return _client


class Relay(AsyncWebsocketConsumer):
    task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data=json.dumps({"type": "hello", "protocol": 1}))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        frame = json.loads(text_data or "{}")
        if frame.get("type") == "send" and (self.task is None or self.task.done()):
            self.task = asyncio.create_task(self.relay(str(frame.get("content", ""))))

    async def relay(self, content: str) -> None:
        try:
            stream = await client().chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": content}], stream=True
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    text = chunk.choices[0].delta.content
                    await self.send(text_data=json.dumps({"type": "delta", "text": text}))
            await self.send(text_data=json.dumps({"type": "reply.finished", "status": "complete"}))
        except Exception as error:  # reported to the client, which counts it
            message = f"{type(error).__name__}: {error}"
            await self.send(text_data=json.dumps({"type": "error", "message": message}))

    async def disconnect(self, code: int) -> None:
        if self.task is not None:
            self.task.cancel()


application = ProtocolTypeRouter(
    {"websocket": URLRouter([path("ws/streamchat/", Relay.as_asgi())])}
)
