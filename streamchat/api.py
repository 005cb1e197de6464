"""Ask OpenRouter from your own Python code: a front end of the same engine as the chat.

- ``astream()`` / ``stream()``: async and sync generators of reply text as it arrives.
- ``astream_events()``: every typed event (text, reasoning, usage, finish).
- ``acomplete()`` / ``complete()``: the whole reply as a ``ChatResult``.

Every call goes through the reply engine (``streaming.engine.acomplete_messages``) like a chat
message: an enabled model, the acting user's rate limits and budgets (reserved before the call,
settled when it ends), the site's keys with failover and retries, and one ``Usage`` row with
``source="python"``. The acting user is ``user=``, else the system user named by the
``SYSTEM_USERNAME`` setting (created on first use, inactive, with no password), whose limits
admin sets like anyone's. Nothing is stored as a conversation.

All take optional callbacks: ``on_chunk(text)`` per piece of text, ``on_complete(result)`` once
the reply finished, ``on_error(error)`` before a ``StreamchatError`` is raised (it is always
raised): an ``OpenRouterError`` for an upstream failure, a ``ChatError`` for a refusal
(``rate_limited``, ``model_unavailable``...). docs/python-api.md has examples.

The sync functions run the async engine on one background event loop thread (so the shared HTTP
client and its connections are reused across calls); callbacks run in the caller's thread. Do
not call them from async code: use the ``a``-prefixed twins there.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from django.contrib.auth import get_user_model

from . import keys as key_store
from .conf import app_settings
from .exceptions import ChatError, StreamchatError
from .keys import KeyChoice
from .models import Usage
from .openrouter.errors import OpenRouterError
from .openrouter.events import ContentDelta, Finish, ReasoningDelta, StreamEvent, UsageReport
from .streaming import db, engine
from .streaming.events import DeltaKind, Finished

__all__ = [
    "ChatResult",
    "ChatError",
    "OpenRouterError",
    "StreamchatError",
    "acomplete",
    "astream",
    "astream_events",
    "complete",
    "stream",
    "system_user",
]

Messages = str | Sequence[Mapping[str, Any]]
T = TypeVar("T")

# Fields the engine sets from the call's own arguments and the limits: extra_body may not change
# them (a max_tokens there would escape the budget's reservation).
RESERVED_FIELDS = frozenset(
    {"model", "messages", "stream", "models", "max_tokens", "max_completion_tokens"}
)


@dataclass
class ChatResult:
    """A whole reply: its text, reasoning, usage and how it finished.

    ``usage`` is always there: the figures the usage ledger holds for this reply
    (``usage.estimated`` is True when OpenRouter reported none and they are streamchat's
    estimate)."""

    text: str = ""
    reasoning: str = ""
    usage: UsageReport = field(default_factory=lambda: UsageReport(0, 0, estimated=True))
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


class _EventFollower:
    """Follows one engine reply; its text and end wait in a queue for the generator."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[StreamEvent | Finished] = asyncio.Queue()

    def push(self, kind: DeltaKind, offset: int, text: str) -> None:
        self.queue.put_nowait(ContentDelta(text) if kind == "delta" else ReasoningDelta(text))

    async def finished(self, event: Finished) -> None:
        self.queue.put_nowait(event)


def system_user() -> Any:
    """The user the Python API acts as without ``user=``: ``SYSTEM_USERNAME``, created on first
    use, inactive and without a usable password (nobody can log in as it). Sync."""
    User = get_user_model()
    username = app_settings.SYSTEM_USERNAME
    try:
        return User._default_manager.get_by_natural_key(username)
    except User.DoesNotExist:
        pass
    user = User(**{User.USERNAME_FIELD: username})
    user.is_active = False
    user.set_unusable_password()
    try:
        user.save()
    except Exception as error:
        raise ChatError(
            "invalid",
            f"The Python API could not create its system user {username!r} ({error}): "
            "pass user= or create that user.",
            field="user",
        ) from error
    return user


def _acting_user(user: Any) -> Any:
    if user is None:
        return system_user()
    if not getattr(user, "is_authenticated", False) or getattr(user, "pk", None) is None:
        raise ChatError("not_authenticated", "user= must be a saved, authenticated user.")
    return user


def _messages(messages: Messages, system: str | None) -> list[dict[str, Any]]:
    listed = (
        [{"role": "user", "content": messages}]
        if isinstance(messages, str)
        else [dict(m) for m in messages]
    )
    if system is not None:
        listed.insert(0, {"role": "system", "content": system})
    return listed


def _options(
    temperature: Any,
    max_tokens: Any,
    extra_body: Mapping[str, Any] | None,
    fallback_models: Sequence[str],
) -> engine.Options:
    """The engine's options. ``extra_body`` comes from trusted host code, so any OpenRouter field
    passes (a client's goes through ``streaming.parameters`` instead), but not those the engine
    sets itself: a ``max_tokens`` there would escape the budget's reservation."""
    extra = dict(extra_body or {})
    reserved = sorted(RESERVED_FIELDS & extra.keys())
    if reserved:
        raise ChatError(
            "invalid",
            f"extra_body may not set {', '.join(reserved)}: use the arguments "
            "(model, max_tokens, fallback_models).",
            field="extra_body",
        )
    checked = engine.validate_options(temperature, max_tokens)
    return replace(
        checked,
        extra=extra,
        fallback_models=tuple(fallback_models) if fallback_models else None,
    )


def _explicit_keys(api_key: str | None, keys: Sequence[KeyChoice] | None) -> list[KeyChoice] | None:
    if api_key:
        return [KeyChoice(id=None, secret=api_key, hint=key_store.key_hint(api_key))]
    if keys is not None:
        return list(keys)
    return None


async def _call(callback: Callable[[T], Any] | None, value: T) -> None:
    if callback is None:
        return
    outcome = callback(value)
    if inspect.isawaitable(outcome):
        await outcome


async def astream_events(
    messages: Messages,
    *,
    user: Any = None,
    model: str | None = None,
    system: str | None = None,
    api_key: str | None = None,
    keys: Sequence[KeyChoice] | None = None,
    fallback_models: Sequence[str] = (),
    temperature: float | None = None,
    max_tokens: int | None = None,
    extra_body: Mapping[str, Any] | None = None,
) -> AsyncIterator[StreamEvent]:
    """Every event of one reply: ContentDelta, ReasoningDelta, then UsageReport and Finish.

    Raises ``ChatError`` for a refusal (nothing was sent upstream) and ``OpenRouterError`` for
    an upstream failure (after any text it streamed). Closing the generator early stops the
    reply; its usage is recorded all the same."""
    options = _options(temperature, max_tokens, extra_body, fallback_models)
    acting = user if user is not None else await db.run(system_user)
    acting = _acting_user(acting)
    follower = _EventFollower()
    reply = await engine.acomplete_messages(
        acting,
        messages=_messages(messages, system),
        model=model,
        options=options,
        source=Usage.Source.PYTHON,
        keep=False,
        follower=follower,
        keys=_explicit_keys(api_key, keys),
    )
    end: Finished | None = None
    try:
        while end is None:
            item = await follower.queue.get()
            if isinstance(item, Finished):
                end = item
            else:
                yield item
    finally:
        if end is None:
            reply.stop()  # the caller stopped reading: nobody else would
    if end.error is not None and end.status != "stopped":
        raise reply.error or ChatError(end.error.code, end.error.message)
    upstream = reply.upstream_usage
    figures = end.usage
    if figures is not None:
        yield UsageReport(
            prompt_tokens=figures.prompt_tokens,
            completion_tokens=figures.completion_tokens,
            reasoning_tokens=figures.reasoning_tokens,
            cost=figures.cost,
            details=dict(upstream.details) if upstream is not None else {},
            estimated=figures.estimated,
        )
    finish = reply.upstream_finish
    yield finish if finish is not None else Finish(end.finish_reason, end.model, "")


async def astream(
    messages: Messages,
    *,
    on_chunk: Callable[[str], Any] | None = None,
    on_complete: Callable[[ChatResult], Any] | None = None,
    on_error: Callable[[StreamchatError], Any] | None = None,
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
    except StreamchatError as error:
        await _call(on_error, error)
        raise
    await _call(on_complete, collector.finish())


async def acomplete(
    messages: Messages,
    *,
    on_chunk: Callable[[str], Any] | None = None,
    on_complete: Callable[[ChatResult], Any] | None = None,
    on_error: Callable[[StreamchatError], Any] | None = None,
    **options: Any,
) -> ChatResult:
    """The whole reply at once."""
    collector = _Collector()
    try:
        async for event in astream_events(messages, **options):
            collector.add(event)
            if isinstance(event, ContentDelta):
                await _call(on_chunk, event.text)
    except StreamchatError as error:
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
    if options.get("user") is None:
        # Here, in the caller's thread and database connection (and transaction).
        options = {**options, "user": system_user()}
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
    on_error: Callable[[StreamchatError], Any] | None = None,
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
    except StreamchatError as error:
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
    on_error: Callable[[StreamchatError], Any] | None = None,
    **options: Any,
) -> ChatResult:
    """``acomplete`` for sync code: the whole reply at once."""
    collector = _Collector()
    try:
        for event in _sync_events(messages, options):
            collector.add(event)
            if isinstance(event, ContentDelta) and on_chunk is not None:
                on_chunk(event.text)
    except StreamchatError as error:
        if on_error is not None:
            on_error(error)
        raise
    result = collector.finish()
    if on_complete is not None:
        on_complete(result)
    return result
