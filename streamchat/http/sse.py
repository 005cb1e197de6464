"""Replies as Server-Sent Events (docs/http.md): async views, served under ASGI.

- ``POST api/stream/`` with a websocket ``send``, ``regenerate`` or ``edit`` frame as its JSON body
  starts a reply and streams it: ``ack``, ``conversation.updated`` (a new conversation),
  ``reply.started``, then ``delta`` / ``reasoning`` events, ``reply.finished`` and ``end``.
- ``GET api/replies/<id>/events/`` follows a reply from what the client holds (``Last-Event-ID``,
  or ``?from=`` on the first request), whether it still streams (here or in another worker) or
  already ended.
- ``POST api/replies/<id>/stop/`` stops it.

Every event's ``data`` is the websocket protocol's frame (docs/protocol.md) and its ``id`` is the
client's position after it: the code points of reply text it holds, plus ``.`` and those of the
reasoning once there is any (``"120"``, ``"120.48"``). A reconnecting ``EventSource`` sends the
last one as ``Last-Event-ID`` and gets exactly what it misses. A client that goes away does not
stop the reply (nor, while it is being admitted, its start); the stop endpoint does.

Requests that are refused before a reply starts answer JSON errors with their status (400, 401,
403, 404, 409 ``busy``, 413, 429 with ``Retry-After``); what goes wrong upstream later arrives as
the ``reply.finished`` event's ``error``, as on the websocket.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from functools import wraps
from typing import Any

from asgiref.sync import sync_to_async
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt

from ..conf import app_settings
from ..exceptions import ChatError, unavailable
from ..models import Usage
from ..streaming import engine, frames
from ..streaming.follow import QueueFollower, afollow
from ..streaming.hub import get_hub
from .responses import csrf_passes, error_response, json_error, parse_json_body

# An EventSource that lost its connection tries again after this long (ms).
RETRY_MS = 1000
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_POSITION = re.compile(r"(\d{1,10})(?:\.(\d{1,10}))?")

View = Callable[..., Coroutine[Any, Any, HttpResponseBase]]


def session_view(*methods: str) -> Callable[[View], View]:
    """An async view for a logged-in session: JSON 401 / 403 (CSRF) / 405, and ``ChatError``s
    answered as JSON with their status. The view gets the user as its second argument."""

    def decorate(view: View) -> View:
        @csrf_exempt  # checked below, so a failure answers JSON instead of the HTML 403 page
        @wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method not in methods:
                response = json_error(
                    "method_not_allowed", f"{request.method} is not allowed here."
                )
                response["Allow"] = ", ".join(methods)
                return response
            try:
                user = await request.auser()
                if not user.is_authenticated:
                    return json_error("not_authenticated", _("Log in to use the chat."))
                if request.method not in SAFE_METHODS and not await sync_to_async(csrf_passes)(
                    request
                ):
                    return json_error(
                        "csrf_failed", _("CSRF verification failed: reload the page.")
                    )
                return await view(request, user, *args, **kwargs)
            except ChatError as error:
                return error_response(error)
            except DatabaseError:  # a database blip: JSON 503 with Retry-After, not a 500
                return error_response(unavailable())

        return wrapper

    return decorate


# -- the views ---------------------------------------------------------------------------------


@session_view("POST")
async def stream_reply(request: HttpRequest, user: Any) -> HttpResponseBase:
    """Start a reply (a websocket ``send`` / ``regenerate`` / ``edit`` frame as the body) and
    stream it."""
    frame = parse_json_body(request, app_settings.MAX_FRAME_BYTES)
    kind = frame.get("type", "send")
    common = {
        "client_id": frame.get("client_id"),
        "model": engine.requested_model(frame),
        "options": engine.validate_options(frame.get("temperature"), frame.get("max_tokens")),
        "source": Usage.Source.SSE,
    }
    start, fields = _entry_point(kind, frame)
    follower = QueueFollower(paused=True)  # learns its reply id once accepted
    # The start runs to its end even if the client goes away meanwhile: a reply admitted (rows
    # stored, limits reserved) always runs.
    starting = get_hub().spawn(start(user, follower=follower, **common, **fields))
    try:
        accepted: engine.Accepted = await asyncio.shield(starting)
    except asyncio.CancelledError:
        follower.close()
        starting.add_done_callback(_retrieve)  # a refusal nobody waits for is not an error
        raise
    except BaseException:
        follower.close()
        raise
    started = accepted.started
    head: list[dict[str, Any]] = [frames.ack(started)]
    if started.new_conversation:
        head.append(frames.conversation_updated(started.conversation_id, started.title))
    if started.duplicate and accepted.reply is None:
        # The first delivery's reply, from its start (wherever it runs, or from its row).
        follower.close()
        if not started.reply_id:
            raise ChatError("not_found", "No such reply.")
        follower = QueueFollower(started.reply_id)
        await afollow(user.pk, started.reply_id, follower)
    else:
        if not started.duplicate:
            head.append(frames.reply_started(started))
        follower.release(started.reply_id)
    return event_stream_response(follower, head)


@session_view("GET")
async def follow_reply(request: HttpRequest, user: Any, pk: int) -> HttpResponseBase:
    """Follow reply ``pk`` from ``Last-Event-ID`` (or ``?from=``) to its end."""
    last = request.headers.get("Last-Event-ID") or request.GET.get("from") or "0"
    match = _POSITION.fullmatch(last.strip())
    if match is None:
        raise ChatError(
            "invalid",
            "Last-Event-ID must be an event id of this stream, such as 120 or 120.48.",
            field="Last-Event-ID",
        )
    offset, reasoning = int(match[1]), int(match[2] or 0)
    follower = QueueFollower(pk, offset=offset, reasoning_offset=reasoning)
    await afollow(user.pk, pk, follower)
    return event_stream_response(follower, [], offset=offset, reasoning_offset=reasoning)


@session_view("POST")
async def stop_reply(request: HttpRequest, user: Any, pk: int) -> HttpResponseBase:
    """Stop a streaming reply (in this worker or another): 204, or 404 when it does not stream."""
    if not await engine.astop(user, pk):
        raise ChatError("not_found", "No such streaming reply.")
    return HttpResponse(status=204)


@session_view("POST")
async def confirm_tool(request: HttpRequest, user: Any, pk: int, call: str) -> HttpResponseBase:
    """The user's decision on a tool call waiting for it: ``{"approve": true|false}``; 204, or
    404 when no such call waits."""
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        raise ChatError("bad_json", "The body is not valid JSON.") from None
    approve = body.get("approve") if isinstance(body, dict) else None
    if not isinstance(approve, bool):
        raise ChatError("invalid", "approve must be true or false.", field="approve")
    if not await engine.aconfirm(user, pk, engine.validate_call_id(call), approve):
        raise ChatError("not_found", "No such tool call waiting for a decision.")
    return HttpResponse(status=204)


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _entry_point(
    kind: Any, frame: dict[str, Any]
) -> tuple[Callable[..., Awaitable[engine.Accepted]], dict[str, Any]]:
    """The engine call a frame asks for, and its own fields (as the websocket reads them)."""
    if kind == "send":
        return engine.asend, {
            "content": frame.get("content"),
            "conversation_id": engine.validate_id(
                frame.get("conversation"), "conversation", optional=True
            ),
            "parent_id": engine.validate_id(frame.get("parent"), "parent", optional=True),
            "attachments": frame.get("attachments"),
        }
    if kind == "regenerate":
        return engine.aregenerate, {"reply_id": engine.validate_id(frame.get("reply"), "reply")}
    if kind == "edit":
        return engine.aedit, {
            "message_id": engine.validate_id(frame.get("message"), "message"),
            "content": frame.get("content"),
            "attachments": frame.get("attachments"),
        }
    raise ChatError("invalid", "type must be send, regenerate or edit.", field="type")


# -- the stream --------------------------------------------------------------------------------


def event_stream_response(
    follower: QueueFollower,
    head: list[dict[str, Any]],
    *,
    offset: int = 0,
    reasoning_offset: int = 0,
) -> StreamingHttpResponse:
    response = StreamingHttpResponse(
        _events(follower, head, offset, reasoning_offset),
        content_type="text/event-stream; charset=utf-8",
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response


async def _events(
    follower: QueueFollower, head: list[dict[str, Any]], text: int, reasoning: int
) -> AsyncIterator[str]:
    """The response body. Leaving it (the client went away) only stops following."""
    keepalive = app_settings.SSE_KEEPALIVE_SECONDS
    try:
        yield f"retry: {RETRY_MS}\n\n"
        position = _position(text, reasoning)
        for first in head:
            yield _event(first, position)
        while True:
            frame = await follower.get(keepalive)
            if frame is None:
                yield ": keep-alive\n\n"
                continue
            kind = frame["type"]
            if kind == "delta":
                text = frame["offset"] + len(frame["text"])
                position = _position(text, reasoning)
            elif kind == "reasoning":
                reasoning = frame["offset"] + len(frame["text"])
                position = _position(text, reasoning)
            yield _event(frame, position)
            if kind == "reply.finished":
                yield _event({"type": "end", "reply": frame["reply"]}, position)
                return
    finally:
        follower.close()


def _position(text: int, reasoning: int) -> str:
    return f"{text}.{reasoning}" if reasoning else str(text)


def _event(frame: dict[str, Any], position: str) -> str:
    # json.dumps escapes line breaks, so the data is one line whatever the text holds.
    data = json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
    return f"id: {position}\nevent: {frame['type']}\ndata: {data}\n\n"
