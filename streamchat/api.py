"""Ask OpenRouter from your own Python code, through the same client, keys and settings as the chat.

- ``astream()`` / ``stream()``: async and sync generators of reply text as it arrives.
- ``astream_events()``: every typed event (text, reasoning, usage, finish).
- ``acomplete()`` / ``complete()``: the whole reply as a ``ChatResult``.

All take optional callbacks: ``on_chunk(text)`` per piece of text, ``on_complete(result)`` once
the reply finished, ``on_error(error)`` before an ``OpenRouterError`` is raised (it is always
raised). Keys: ``api_key="sk-or-v1-…"`` or ``keys=[KeyChoice…]``, else the chat's own keys
(active ``ApiKey`` rows by priority, then ``STREAMCHAT["API_KEY"]``); a row that answers 401/402
is marked failing in admin and the next one is tried. Nothing here writes chat history or usage
rows: these helpers are a client, not the chat. docs/python-api.md has examples.

The sync functions run the async client on one background event loop thread (so the shared HTTP
client and its connections are reused across calls); callbacks run in the caller's thread. Do
not call them from async code: use the ``a``-prefixed twins there.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from . import keys as key_store
from .conf import app_settings
from .keys import KeyChoice
from .openrouter.client import ChatRequest, open_stream
from .openrouter.errors import OpenRouterError
from .openrouter.events import ContentDelta, Finish, ReasoningDelta, StreamEvent, UsageReport

__all__ = [
    "ChatResult",
    "OpenRouterError",
    "acomplete",
    "astream",
    "astream_events",
    "complete",
    "stream",
]

Messages = str | Sequence[Mapping[str, Any]]
T = TypeVar("T")


@dataclass
class ChatResult:
    """A whole reply: its text, reasoning, usage and how it finished."""

    text: str = ""
    reasoning: str = ""
    usage: UsageReport | None = None
    finish_reason: str = ""
    model: str = ""  # the model that answered (a fallback may differ from the one asked for)
    generation_id: str = ""
    provider: str = ""


class _Collector:
    """Accumulates events into a ChatResult (shared by the sync and async helpers)."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.result = ChatResult()

    def add(self, event: StreamEvent) -> None:
        if isinstance(event, ContentDelta):
            self.text.append(event.text)
        elif isinstance(event, ReasoningDelta):
            self.reasoning.append(event.text)
        elif isinstance(event, UsageReport):
            self.result.usage = event
        elif isinstance(event, Finish):
            self.result.finish_reason = event.reason
            self.result.model = event.model
            self.result.generation_id = event.generation_id
            self.result.provider = event.provider

    def finish(self) -> ChatResult:
        self.result.text = "".join(self.text)
        self.result.reasoning = "".join(self.reasoning)
        return self.result


def _messages(messages: Messages, system: str | None) -> list[dict[str, Any]]:
    listed = (
        [{"role": "user", "content": messages}]
        if isinstance(messages, str)
        else [dict(m) for m in messages]
    )
    if system is not None:
        listed.insert(0, {"role": "system", "content": system})
    return listed


def _request(
    messages: Messages,
    model: str | None,
    system: str | None,
    fallback_models: Sequence[str],
    temperature: float | None,
    max_tokens: int | None,
    extra_body: Mapping[str, Any] | None,
) -> ChatRequest:
    return ChatRequest(
        model=model or app_settings.DEFAULT_MODEL,
        messages=_messages(messages, system),
        fallback_models=list(fallback_models),
        temperature=temperature,
        max_tokens=max_tokens,
        extra_body=dict(extra_body or {}),
    )


def _explicit_keys(api_key: str | None, keys: Sequence[KeyChoice] | None) -> list[KeyChoice] | None:
    if api_key:
        return [KeyChoice(id=None, secret=api_key, hint=key_store.key_hint(api_key))]
    if keys is not None:
        return list(keys)
    return None


async def _record_failure(key: KeyChoice, error: OpenRouterError) -> None:
    await key_store.arecord_key_failure(key, error.message)


async def _call(callback: Callable[[T], Any] | None, value: T) -> None:
    if callback is None:
        return
    outcome = callback(value)
    if inspect.isawaitable(outcome):
        await outcome


async def astream_events(
    messages: Messages,
    *,
    model: str | None = None,
    system: str | None = None,
    api_key: str | None = None,
    keys: Sequence[KeyChoice] | None = None,
    fallback_models: Sequence[str] = (),
    temperature: float | None = None,
    max_tokens: int | None = None,
    extra_body: Mapping[str, Any] | None = None,
) -> AsyncIterator[StreamEvent]:
    """Every event of one reply: ContentDelta, ReasoningDelta, then UsageReport and Finish."""
    request = _request(
        messages, model, system, fallback_models, temperature, max_tokens, extra_body
    )
    chosen = _explicit_keys(api_key, keys)
    if chosen is None:
        chosen = await key_store.ausable_keys()
    stream = await open_stream(request, chosen, on_key_failure=_record_failure)
    async with stream:
        async for event in stream:
            yield event


async def astream(
    messages: Messages,
    *,
    on_chunk: Callable[[str], Any] | None = None,
    on_complete: Callable[[ChatResult], Any] | None = None,
    on_error: Callable[[OpenRouterError], Any] | None = None,
    **options: Any,
) -> AsyncIterator[str]:
    """The reply's text, piece by piece. Callbacks may be plain functions or coroutines."""
    collector = _Collector()
    try:
        async for event in astream_events(messages, **options):
            collector.add(event)
            if isinstance(event, ContentDelta):
                await _call(on_chunk, event.text)
                yield event.text
    except OpenRouterError as error:
        await _call(on_error, error)
        raise
    await _call(on_complete, collector.finish())


async def acomplete(
    messages: Messages,
    *,
    on_chunk: Callable[[str], Any] | None = None,
    on_complete: Callable[[ChatResult], Any] | None = None,
    on_error: Callable[[OpenRouterError], Any] | None = None,
    **options: Any,
) -> ChatResult:
    """The whole reply at once."""
    collector = _Collector()
    try:
        async for event in astream_events(messages, **options):
            collector.add(event)
            if isinstance(event, ContentDelta):
                await _call(on_chunk, event.text)
    except OpenRouterError as error:
        await _call(on_error, error)
        raise
    result = collector.finish()
    await _call(on_complete, result)
    return result


# --- sync twins -----------------------------------------------------------------------------

_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _background_loop() -> asyncio.AbstractEventLoop:
    """One event loop thread for the sync helpers, started on first use."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="streamchat-api", daemon=True).start()
            _loop = loop
        return _loop


def _run(coroutine: Awaitable[T]) -> T:
    async def wrapper() -> T:
        return await coroutine

    return asyncio.run_coroutine_threadsafe(wrapper(), _background_loop()).result()


def _sync_events(messages: Messages, options: dict[str, Any]) -> Iterator[StreamEvent]:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("streamchat.api.stream() and complete() are sync: use astream/acomplete")
    if _explicit_keys(options.get("api_key"), options.get("keys")) is None:
        # Read the keys here, in the caller's thread and database connection.
        options = {**options, "keys": key_store.usable_keys()}
    events = astream_events(messages, **options)
    try:
        while True:
            try:
                event = _run(events.__anext__())
            except StopAsyncIteration:
                return
            yield event
    finally:
        _run(events.aclose())


def stream(
    messages: Messages,
    *,
    on_chunk: Callable[[str], Any] | None = None,
    on_complete: Callable[[ChatResult], Any] | None = None,
    on_error: Callable[[OpenRouterError], Any] | None = None,
    **options: Any,
) -> Iterator[str]:
    """``astream`` for sync code: a generator of the reply's text."""
    collector = _Collector()
    try:
        for event in _sync_events(messages, options):
            collector.add(event)
            if isinstance(event, ContentDelta):
                if on_chunk is not None:
                    on_chunk(event.text)
                yield event.text
    except OpenRouterError as error:
        if on_error is not None:
            on_error(error)
        raise
    if on_complete is not None:
        on_complete(collector.finish())


def complete(
    messages: Messages,
    *,
    on_chunk: Callable[[str], Any] | None = None,
    on_complete: Callable[[ChatResult], Any] | None = None,
    on_error: Callable[[OpenRouterError], Any] | None = None,
    **options: Any,
) -> ChatResult:
    """``acomplete`` for sync code: the whole reply at once."""
    collector = _Collector()
    try:
        for event in _sync_events(messages, options):
            collector.add(event)
            if isinstance(event, ContentDelta) and on_chunk is not None:
                on_chunk(event.text)
    except OpenRouterError as error:
        if on_error is not None:
            on_error(error)
        raise
    result = collector.finish()
    if on_complete is not None:
        on_complete(result)
    return result
