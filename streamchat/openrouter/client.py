"""The streaming client: one path from a ``ChatRequest`` to typed events, shared by every caller.

Guarantees:

- ``open_stream`` does everything that may be retried, and nothing after: it tries the keys in
  order (401/402 → ``on_key_failure`` and the next key), retries 408/429/5xx and connection
  errors with exponential backoff and full jitter (honouring ``Retry-After`` up to
  ``RETRY_AFTER_MAX``), and returns once the stream brought its first delta (or ended). An error
  event (both shapes) or a broken connection after HTTP 200 but before any delta is retried the
  same way: an error event when its code is a 408/429/5xx (or OpenRouter's ``server_error``).
  No retry ever happens after the first delta, so no text is ever shown twice.
- Iterating a ``ChatStream`` yields ``ContentDelta`` / ``ReasoningDelta`` / ``ToolCallDelta`` as
  they arrive (tool-call fragments as sent, never joined or parsed here), then one
  ``UsageReport`` (the last usage OpenRouter sent, wherever it sent it) and one ``Finish``. Any
  other ending raises ``OpenRouterError``: ``stream_error`` (both mid-stream error shapes),
  ``incomplete`` (ended without a finish reason), ``connection_error`` (reset, truncated body),
  ``first_token_timeout`` / ``idle_timeout`` / ``total_timeout``. A usage report that came with a
  failed stream is still yielded before the error (and kept on ``stream.usage``).
- The deadlines are the client's own: keep-alive comments (``: OPENROUTER PROCESSING``) restart
  the SDK's read timeout but not these. Only content, reasoning and tool-call deltas count as
  progress.
- On any error, timeout or ``aclose()`` the HTTP response is closed at once, so OpenRouter sees
  the abort and stops billing. After ``aclose()`` iteration ends without a ``Finish``.
- Text is cleaned: NUL characters and lone UTF-16 surrogates are removed from deltas (PostgreSQL
  cannot store NUL, UTF-8 cannot encode lone surrogates); nothing else is changed. A surrogate pair
  split across two deltas (``\ud83d`` ending one, ``\ude00`` starting the next) is joined: the
  high half waits for the next delta of its kind. Bytes that are not UTF-8 are decoded with
  replacement (U+FFFD), so the valid text around them is kept; the first time in a stream this
  happens a warning names the reply (``ChatRequest.label``) and generation, never the text.
  Lines are framed on bytes before decoding, so a character split across network reads decodes.

Performance: the SDK's per-chunk pydantic models are skipped. The request goes through
``with_streaming_response`` on a shared ``AsyncOpenAI`` (``sdk.async_client``) and the raw SSE
bytes are split and parsed here with orjson; deadlines cost one float store per delta (a lazy
timer re-arms itself only when it fires). ``bench/parse_chunks.py`` measures the parser.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import openai
import orjson

from ..conf import app_settings
from ..keys import KeyChoice
from ..scrub import scrub
from .errors import OpenRouterError
from .events import ContentDelta, Finish, ReasoningDelta, StreamEvent, ToolCallDelta, UsageReport
from .sdk import async_client, request_timeout, translate

logger = logging.getLogger(__name__)

# After a mid-stream error event, read on this long (s) for a usage chunk, then give up.
ERROR_GRACE = 1.0
# Codes that mean "this key cannot be used": tell the caller, then try the next key.
KEY_FAILURES = frozenset({"invalid_key", "out_of_credits"})
# Error-event codes (when not an HTTP status) that mean "try again": OpenRouter's documented
# mid-stream shape says "server_error"; statuses are judged as before the stream (_transient).
TRANSIENT_CODES = frozenset(
    {"server_error", "timeout", "rate_limit_exceeded", "overloaded", "service_unavailable"}
)

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_NOTHING: tuple[StreamEvent, ...] = ()


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What a broken body raises: the SDK's errors and its HTTP library's (httpx2, or httpx)."""
    errors: list[type[BaseException]] = [openai.APIError]
    for name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        errors += [module.HTTPError, module.StreamError]
    return tuple(errors)


TRANSPORT_ERRORS = _transport_errors()


@dataclass
class ChatRequest:
    """What to ask for; ``messages`` in the OpenAI shape."""

    model: str
    messages: list[dict[str, Any]]
    fallback_models: list[str] = field(default_factory=list)  # sent as extra_body "models"
    temperature: float | None = None
    max_tokens: int | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # how log lines name the reply this request is for (not sent upstream)

    def create_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self.model, "messages": self.messages, "stream": True}
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        if self.max_tokens is not None:
            kwargs["max_tokens"] = self.max_tokens
        extra = dict(self.extra_body)
        if self.fallback_models:
            extra["models"] = list(self.fallback_models)
        if extra:
            kwargs["extra_body"] = extra
        return kwargs


KeyFailureHook = Callable[[KeyChoice, OpenRouterError], Awaitable[None]]


async def open_stream(
    request: ChatRequest,
    keys: Sequence[KeyChoice],
    *,
    on_key_failure: KeyFailureHook | None = None,
    on_open: Callable[[ChatStream], None] | None = None,
) -> ChatStream:
    """Send the request and return the stream once it brought its first delta (or ended).

    ``on_open`` sees each attempt's stream as soon as OpenRouter answered HTTP 200 (before its
    first delta), so a caller that is stopped meanwhile knows the generation and key.

    Raises ``OpenRouterError``: ``no_api_key`` without keys; the last key's error when every key
    failed with 401/402; otherwise the error that retries could not overcome.
    """
    if not keys:
        raise OpenRouterError(
            "no_api_key", "No OpenRouter API key is configured: add one in the admin."
        )
    loop = asyncio.get_running_loop()
    total_deadline = loop.time() + app_settings.TOTAL_TIMEOUT
    last_key_error: OpenRouterError | None = None
    for key in keys:
        attempt = 0
        while True:
            try:
                stream = await _attempt(request, key, total_deadline)
                if on_open is not None:
                    on_open(stream)
                await stream.prime()  # an error before the first delta is retried below
                return stream
            except OpenRouterError as error:
                if error.code in KEY_FAILURES and not error.retriable:
                    last_key_error = error
                    if on_key_failure is not None:
                        await on_key_failure(key, error)
                    break
                delay = retry_delay(error, attempt)
                if delay is None or loop.time() + delay >= total_deadline:
                    raise
                logger.info(
                    "streamchat: OpenRouter %s (%s); retry %d in %.2f s",
                    error.code,
                    error.status,
                    attempt + 1,
                    delay,
                )
                attempt += 1
                await asyncio.sleep(delay)
    assert last_key_error is not None
    raise last_key_error


def retry_delay(error: OpenRouterError, attempt: int) -> float | None:
    """Seconds to wait before retry number ``attempt + 1``, or None when not to retry."""
    if not error.retriable or attempt >= app_settings.MAX_RETRIES:
        return None
    if error.retry_after is not None:
        if error.retry_after > app_settings.RETRY_AFTER_MAX:
            return None  # the message already says when to try again
        return error.retry_after
    ceiling = min(app_settings.BACKOFF_MAX, app_settings.BACKOFF_BASE * 2**attempt)
    return random.uniform(0, ceiling)


async def _attempt(request: ChatRequest, key: KeyChoice, total_deadline: float) -> ChatStream:
    loop = asyncio.get_running_loop()
    first_deadline = min(loop.time() + app_settings.FIRST_TOKEN_TIMEOUT, total_deadline)
    client = async_client(key.secret)
    manager = client.chat.completions.with_streaming_response.create(
        **request.create_kwargs(), timeout=request_timeout()
    )
    try:
        async with asyncio.timeout_at(first_deadline):
            response = await manager.__aenter__()
    except TimeoutError:
        code = "total_timeout" if first_deadline >= total_deadline else "first_token_timeout"
        raise OpenRouterError(code, _TIMEOUT_MESSAGES[code]) from None
    except openai.OpenAIError as exc:
        raise translate(exc, model=request.model) from None
    return ChatStream(
        response, key, request.model, first_deadline, total_deadline, label=request.label
    )


_TIMEOUT_MESSAGES = {
    "first_token_timeout": "The model did not start answering in time.",
    "idle_timeout": "The model stopped answering mid-reply.",
    "total_timeout": "The reply took too long and was cut off.",
}


class ChatStream:
    """An open reply stream: an async iterator of events and an async context manager.

    Iterate it once. ``generation_id`` comes from ``X-Generation-Id`` (or the first chunk's id);
    ``model`` and ``provider`` are the ones that answered; ``usage`` the last usage seen.
    """

    def __init__(
        self,
        response: Any,
        key: KeyChoice,
        model_requested: str,
        first_deadline: float,
        total_deadline: float,
        *,
        label: str = "",
    ) -> None:
        self.key = key
        self.model_requested = model_requested
        self.label = label
        self.generation_id: str = scrub(response.headers.get("x-generation-id", ""))
        self.model = ""
        self.provider = ""
        self.usage: UsageReport | None = None
        self.finish_reason: str | None = None
        self.error: OpenRouterError | None = None
        self._response = response
        self._loop = asyncio.get_running_loop()
        self._first_deadline = first_deadline
        self._total_deadline = total_deadline
        self._idle = app_settings.IDLE_TIMEOUT
        self._last_delta: float | None = None  # loop time of the latest delta
        self._grace_deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._reading: asyncio.Task[Any] | None = None  # the task awaiting the socket
        self._expired: str | None = None
        self._closed = False
        # Upstream text that was not clean: deltas with bytes that are not UTF-8 (warned once).
        self.invalid_bytes = 0
        # The high half of a surrogate pair that ended a delta, by kind, until the next delta.
        self._held: dict[type[StreamEvent], str] = {}
        # What ``prime`` read ahead (up to the first delta), replayed by iteration.
        self._source: AsyncIterator[StreamEvent] | None = None
        self._primed: list[StreamEvent] = []
        self._primed_error: OpenRouterError | None = None

    def __repr__(self) -> str:
        return f"<ChatStream {self.generation_id or '?'} {self.model_requested} {self.key!r}>"

    async def __aenter__(self) -> ChatStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._replay() if self._source is not None else self._events()

    async def prime(self) -> None:
        """Read ahead to the first delta (or the end), for iteration to replay. Raises an error
        that came before any delta when it is retriable (``open_stream`` tries again); any other
        error is raised by iteration, after the events that came before it."""
        source = self._source = self._events()
        while True:
            try:
                event = await anext(source)
            except StopAsyncIteration:
                return
            except OpenRouterError as error:
                if error.retriable:
                    raise
                self._primed_error = error
                return
            self._primed.append(event)
            if not isinstance(event, UsageReport):  # a delta, or the Finish
                return

    async def _replay(self) -> AsyncIterator[StreamEvent]:
        primed, self._primed = self._primed, []
        for event in primed:
            yield event
        if self._primed_error is not None:
            raise self._primed_error
        assert self._source is not None
        async for event in self._source:
            yield event

    async def aclose(self) -> None:
        """Close the HTTP response now (OpenRouter sees the abort); idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._response.close()

    # --- deadlines -------------------------------------------------------------------------
    def _deadline(self) -> tuple[float, str]:
        if self._grace_deadline is not None:
            return self._grace_deadline, "grace"
        if self._last_delta is None:
            when, code = self._first_deadline, "first_token_timeout"
        else:
            when, code = self._last_delta + self._idle, "idle_timeout"
        if self._total_deadline <= when:
            return self._total_deadline, "total_timeout"
        return when, code

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed:
            return
        when, code = self._deadline()
        if self._loop.time() < when:
            self._timer = self._loop.call_at(when, self._on_timer)
            return
        self._expired = code
        if self._reading is not None:
            self._reading.cancel()

    # --- the event stream ------------------------------------------------------------------
    async def _events(self) -> AsyncIterator[StreamEvent]:
        chunks = self._response.http_response.aiter_bytes()
        buffer = b""
        self._rearm()
        try:
            while True:
                if self._closed:
                    return
                if self._expired is not None:
                    if self._expired == "grace":
                        break
                    raise self._timeout_error()
                # The task reading now (``prime`` in open_stream and the caller may be two).
                task = asyncio.current_task()
                assert task is not None
                self._reading = task
                try:
                    data = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    if self._expired is None or task.uncancel() > 0:
                        raise
                    if self._expired == "grace":
                        break
                    raise self._timeout_error() from None
                finally:
                    self._reading = None
                lines = (buffer + data if buffer else data).split(b"\n")
                buffer = lines.pop()
                for line in lines:
                    events = self._parse_line(line)
                    if events is None:  # [DONE]
                        buffer = b""
                        break
                    for event in events:
                        yield event
                else:
                    continue
                break
            if buffer.strip():  # a last line without its newline
                for event in self._parse_line(buffer) or _NOTHING:
                    yield event
        except TRANSPORT_ERRORS as exc:
            if self._closed:
                return  # aclose() from elsewhere ended the read
            logger.info("streamchat: OpenRouter stream broke: %r", exc)
            started = self._last_delta is not None
            raise OpenRouterError(
                "connection_error",
                "The connection to OpenRouter broke off "
                + ("mid-reply." if started else "before the reply started."),
                retriable=not started,  # nothing was shown: open_stream tries again
                generation_id=self.generation_id,
            ) from None
        finally:
            await self.aclose()
        # The stream ended: report usage, then how it ended.
        if self.usage is not None:
            yield self.usage
        if self.error is not None:
            raise self.error
        if self.finish_reason is None:
            raise OpenRouterError(
                "incomplete",
                "The reply ended without being finished; it may be cut short.",
                generation_id=self.generation_id,
            )
        # Names upstream chose are stored and shown in admin: scrubbed once per reply.
        yield Finish(
            self.finish_reason,
            scrub(self.model) or self.model_requested,
            self.generation_id,
            scrub(self.provider),
        )

    def _timeout_error(self) -> OpenRouterError:
        code = self._expired or "idle_timeout"
        return OpenRouterError(
            code, _TIMEOUT_MESSAGES.get(code, "Timed out."), generation_id=self.generation_id
        )

    def _parse_line(self, line: bytes) -> tuple[StreamEvent, ...] | None:
        """The events of one SSE line; None for ``[DONE]``. Comments and blanks give none."""
        if not line or line[0] == 58:  # b":" a keep-alive comment
            return _NOTHING
        if line.startswith(b"data:"):
            payload = line[5:].strip()
        elif line[0] == 123:  # b"{": a bare JSON body (an error answered as JSON)
            payload = line.strip()
        else:
            return _NOTHING  # other SSE fields (event:, id:, retry:) are not used by OpenRouter
        if payload == b"[DONE]":
            return None
        try:
            chunk = orjson.loads(payload)
            raw = False
        except orjson.JSONDecodeError:
            chunk = self._loads_slowly(payload)
            raw = True
        if not isinstance(chunk, dict):
            return _NOTHING
        return self._apply(chunk, raw)

    def _loads_slowly(self, payload: bytes) -> Any:
        """What orjson refused: bytes that are not UTF-8 (decoded with U+FFFD for them), lone
        surrogate escapes (``\ud83d``: kept in delta text for ``_text``, removed elsewhere), or
        a line that is not JSON at all (None)."""
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            text = payload.decode("utf-8", "replace")
            self.invalid_bytes += 1
            if self.invalid_bytes == 1:
                logger.warning(
                    "streamchat: OpenRouter sent bytes that are not UTF-8 in %s (generation %s, "
                    "model %s); they are replaced with U+FFFD",
                    f"reply {self.label}" if self.label else "a stream",
                    self.generation_id or "?",
                    scrub(self.model) or self.model_requested,
                )
        try:
            return _clean_strings(json.loads(text))
        except (ValueError, RecursionError):
            logger.debug("streamchat: skipped a malformed SSE data line")
            return None

    def _text(self, kind: type[StreamEvent], text: str, raw: bool) -> str:
        """Delta text as it is stored: no NUL; a surrogate pair split across two deltas joined;
        lone surrogates removed (docs/security.md). ``raw``: the chunk came through the standard
        library, so its text may hold surrogates (orjson's never does)."""
        held = self._held.pop(kind, "") if self._held else ""
        if held or raw:
            text = held + text
            if text and "\ud800" <= text[-1] <= "\udbff":  # a high half: wait for its pair
                self._held[kind] = text[-1]
                text = text[:-1]
            if not text.isascii():
                # Pairs become their character, lone halves go (the text rule: removed).
                text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "ignore")
        if "\x00" in text:
            text = text.replace("\x00", "")
        return text

    def _apply(self, chunk: dict[str, Any], raw: bool = False) -> tuple[StreamEvent, ...]:
        if not self.generation_id:
            self.generation_id = scrub(str(chunk.get("id") or ""))
        model = chunk.get("model")
        if model:
            self.model = model
        provider = chunk.get("provider")
        if provider:
            self.provider = provider
        usage = chunk.get("usage")
        if usage:
            self.usage = usage_report(usage)
        error = chunk.get("error")
        if error and self.error is None:
            self._fail(error)
        choices = chunk.get("choices")
        if not choices or self.error is not None:
            return _NOTHING
        choice = choices[0]
        events: tuple[StreamEvent, ...] = _NOTHING
        delta = choice.get("delta")
        if delta:
            text = delta.get("content")
            if text and isinstance(text, str):
                text = self._text(ContentDelta, text, raw)
                if text:
                    events = (ContentDelta(text),)
            thought = delta.get("reasoning")
            if thought and isinstance(thought, str):
                thought = self._text(ReasoningDelta, thought, raw)
                if thought:
                    events = (ReasoningDelta(thought), *events)
            calls = delta.get("tool_calls")
            if calls and isinstance(calls, list):
                events = (*events, *tool_call_deltas(calls))
            if events:
                first = self._last_delta is None
                self._last_delta = self._loop.time()
                if first:  # from the first-token deadline to the (maybe earlier) idle one
                    self._rearm()
        reason = choice.get("finish_reason")
        if reason:
            if reason == "error" or choice.get("error"):
                self._fail(choice.get("error") or {})
            elif self.finish_reason is None:
                self.finish_reason = reason
        return events

    def _fail(self, error: Any) -> None:
        """A mid-stream error event: remember it, and read on briefly for a usage chunk."""
        if isinstance(error, dict):
            upstream = scrub(str(error.get("message") or ""))
            code = error.get("code")
        else:
            upstream, code = scrub(str(error)), None
        detail = f" ({upstream})" if upstream else ""
        status = int(code) if isinstance(code, int) or str(code).isdigit() else None
        started = self._last_delta is not None
        self.error = OpenRouterError(
            "stream_error",
            f"The model provider failed {'mid-reply' if started else 'before replying'}{detail}.",
            status=status,
            # Before any delta this is what a 5xx before the stream would have been, and
            # open_stream retries it the same way (nothing was shown, so nothing repeats).
            retriable=not started and _transient(status, code),
            generation_id=self.generation_id,
        )
        # A retried attempt's usage is not wanted: stop reading at once.
        grace = 0.0 if self.error.retriable else ERROR_GRACE
        self._grace_deadline = self._loop.time() + grace
        self._rearm()

    def _rearm(self) -> None:
        """Point the timer at the current deadline (only needed when it moves earlier)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(self._deadline()[0], self._on_timer)


def _transient(status: int | None, code: Any) -> bool:
    """Whether an error event's code asks for a retry, as the same status before the stream."""
    if status is not None:
        return status in (408, 429) or status >= 500
    return isinstance(code, str) and code in TRANSIENT_CODES


def tool_call_deltas(calls: list[Any]) -> tuple[ToolCallDelta, ...]:
    """``delta.tool_calls`` as events. An item that says nothing (no id, name or arguments) or
    has no usable index is skipped: nothing could place it."""
    events = []
    for position, call in enumerate(calls):
        if not isinstance(call, dict):
            continue
        index = call.get("index", position)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            continue
        function = call.get("function")
        if not isinstance(function, dict):
            function = {}
        call_id, name, arguments = call.get("id"), function.get("name"), function.get("arguments")
        call_id = call_id if isinstance(call_id, str) and call_id else None
        name = name if isinstance(name, str) and name else None
        arguments = arguments.replace("\x00", "") if isinstance(arguments, str) else ""
        if call_id or name or arguments:
            events.append(ToolCallDelta(index, call_id, name, arguments))
    return tuple(events)


def _clean_strings(value: Any) -> Any:
    """Lone surrogates removed from every string of a chunk, except delta text (``content``,
    ``reasoning``), which ``ChatStream._text`` cleans after joining pairs split across deltas."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("", value)
    if isinstance(value, dict):
        return {
            k: v if k in _DELTA_TEXT and isinstance(v, str) else _clean_strings(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_clean_strings(v) for v in value]
    return value


_DELTA_TEXT = frozenset({"content", "reasoning"})


def usage_report(usage: dict[str, Any]) -> UsageReport:
    """A ``UsageReport`` from OpenRouter's usage object (cost as a Decimal, exactly as sent)."""
    details = usage.get("completion_tokens_details") or {}
    cost = usage.get("cost")
    try:
        money = None if cost is None else Decimal(str(cost))
    except InvalidOperation:
        money = None
    return UsageReport(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        reasoning_tokens=int(details.get("reasoning_tokens") or 0)
        if isinstance(details, dict)
        else 0,
        cost=money,
        details=usage,
    )
