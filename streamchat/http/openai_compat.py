"""An OpenAI-compatible API for the tools that speak it: ``POST v1/chat/completions`` (streaming
or not) and ``GET v1/models``, under the app's URL prefix (``/chat/v1`` in the demo is the
``base_url`` to give an OpenAI client). docs/http.md has examples.

Authentication is a personal token (``Authorization: Bearer sc-…``, see ``streamchat.tokens``),
never the session: the views ignore cookies, so CSRF does not apply to them.

Each request goes through the reply engine (``engine.acomplete_messages``): only enabled models,
the token owner's limits and budgets, the API keys with failover, one usage row with source
``api``. Errors use OpenAI's body (``{"error": {"message", "type", "param", "code"}}``) and the
statuses its SDKs map to exceptions: 401 ``AuthenticationError``, 404 ``NotFoundError`` (a model
that is not enabled), 429 ``RateLimitError`` (with ``Retry-After``), 400, 413, 5xx.

Every OpenRouter chat parameter the request sets (``response_format``, sampling, ``stop``,
``seed``, ``tools``, ``provider``, ``models``, ``reasoning``…) is checked and sent upstream as
written (``streaming.parameters``); any other field is a 400 naming it, never dropped silently.
Tool calls are relayed, not run: their fragments stream back as ``delta.tool_calls`` chunks, and a
reply that is not streamed has ``message.tool_calls`` with ``finish_reason: "tool_calls"``.

A streamed reply's chunks carry our own id (``chatcmpl-…``); with
``stream_options.include_usage`` a last chunk with empty ``choices`` carries the usage. An
upstream error after the first chunk arrives as an ``error`` event (the SDKs raise ``APIError``).
When the client goes away, a reply that is not stored as a conversation is stopped (nobody could
read the rest); a stored one goes on, as on the chat page, unless ``CANCEL_ON_DISCONNECT``.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from ..catalog import enabled_models
from ..conf import app_settings
from ..exceptions import ChatError, StreamchatError, openai_error, unavailable
from ..models import ChatModel, Usage
from ..openrouter.events import ToolCallDelta
from ..streaming import engine, frames, parameters
from ..streaming.follow import QueueFollower
from ..streaming.hub import get_hub
from ..streaming.reply import Reply
from ..tokens import TokenError, aauthenticate, bearer_token
from .responses import parse_json_body

# Finish reasons OpenAI clients know; ours that are not ("stopped") read as "stop".
FINISH_REASONS = {"stop", "length", "content_filter", "tool_calls"}


def api_error(
    code: str,
    message: str,
    *,
    param: str | None = None,
    retry_after: float | None = None,
    status: int | None = None,
    details: dict[str, Any] | None = None,
) -> JsonResponse:
    """An error in OpenAI's shape, with the status its SDKs turn into the right exception
    (``exceptions.openai_error``: a code that is not in the table is a 502, from upstream);
    ``details`` are more fields of the error object (``StreamchatError.details``)."""
    shape = openai_error(code)
    body = {"message": message, "type": shape.type, "param": param, "code": shape.code}
    response = JsonResponse(
        {"error": {**body, **(details or {})}},
        status=status or shape.status,
    )
    if retry_after is not None:
        response["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


def _refused(error: StreamchatError) -> JsonResponse:
    message = (
        f"{error.message} GET /v1/models lists the models you can use."
        if openai_error(error.public_code).code == "model_not_found"
        else error.message
    )
    return api_error(
        error.public_code,
        message,
        param=error.field,
        retry_after=error.retry_after,
        details=error.details,
    )


async def _token_user(request: HttpRequest) -> Any:
    return await aauthenticate(bearer_token(request.headers.get("Authorization")))


# -- GET v1/models -----------------------------------------------------------------------------


@csrf_exempt
async def models(request: HttpRequest) -> HttpResponseBase:
    """The enabled models, as OpenAI lists models."""
    if request.method != "GET":
        return api_error("method_not_allowed", "Use GET.")
    try:
        await _token_user(request)
        listed = await _model_list()
    except TokenError as error:
        return api_error("invalid_api_key", str(error))
    except DatabaseError:
        return _refused(unavailable())
    return JsonResponse({"object": "list", "data": listed})


async def _model_list() -> list[dict[str, Any]]:
    from channels.db import database_sync_to_async

    def read() -> list[dict[str, Any]]:
        created = dict(ChatModel.objects.values_list("model_id", "created"))
        return [
            {
                "id": model["id"],
                "object": "model",
                "created": int(created[model["id"]].timestamp()) if model["id"] in created else 0,
                "owned_by": model["id"].partition("/")[0] if "/" in model["id"] else "streamchat",
                "name": model["name"],
            }
            for model in enabled_models()
        ]

    return await database_sync_to_async(read)()


# -- POST v1/chat/completions ------------------------------------------------------------------


@csrf_exempt
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    if request.method != "POST":
        return api_error("method_not_allowed", "Use POST.")
    try:
        user = await _token_user(request)
    except TokenError as error:
        return api_error("invalid_api_key", str(error))
    except DatabaseError:  # a database blip: 503 with Retry-After, never an HTML 500
        return _refused(unavailable())
    try:
        body = parse_json_body(request, app_settings.API_MAX_REQUEST_BYTES)
        stream, include_usage, options = _parse(body)
    except ChatError as error:
        return _refused(error)

    follower = ApiFollower() if stream else None
    # Admission runs to its end even if the client goes away meanwhile (limits stay exact).
    starting = get_hub().spawn(
        engine.acomplete_messages(
            user,
            messages=body.get("messages"),
            model=body.get("model"),
            options=options,
            source=Usage.Source.API,
            follower=follower,
        )
    )
    try:
        run: Reply = await asyncio.shield(starting)
    except ChatError as error:
        return _refused(error)
    except asyncio.CancelledError:
        starting.add_done_callback(_abandon_started)
        raise
    completion_id = "chatcmpl-" + secrets.token_urlsafe(18)
    created = int(time.time())
    try:
        if follower is None:
            await run.done.wait()
        else:
            first = await follower.get()  # answer with an HTTP error if nothing came before it
    except asyncio.CancelledError:
        _abandon(run)
        raise
    if follower is None:
        return _completion(run, completion_id, created)
    assert first is not None
    if first["type"] == "reply.finished" and first["status"] == "error" and not run.length:
        follower.close()
        return _upstream_error(first)
    response = StreamingHttpResponse(
        _chunks(run, follower, first, completion_id, created, include_usage),
        content_type="text/event-stream; charset=utf-8",
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def _parse(body: dict[str, Any]) -> tuple[bool, bool, engine.Options]:
    stream = body.get("stream")
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise ChatError("invalid", "stream must be true or false.", field="stream")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise ChatError("invalid", "stream_options must be an object.", field="stream_options")
    if body.get("n") not in (None, 1):
        raise ChatError("invalid", "Only n = 1 is supported.", field="n")
    passed = parameters.validate(body)
    max_tokens = None
    for name in ("max_tokens", "max_completion_tokens"):  # the newer name wins
        value = body.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10**6:
                raise ChatError(
                    "invalid", f"{name} must be a whole number from 1 to 1000000.", field=name
                )
            max_tokens = value
    options = engine.validate_options(body.get("temperature"), max_tokens)
    options = replace(options, extra=passed.extra, fallback_models=passed.models)
    return stream, bool(stream_options.get("include_usage")), options


class ApiFollower(QueueFollower):
    """A ``QueueFollower`` that also takes tool-call fragments. They wait in a list behind one
    ``tool_calls`` frame, so fragments that come while the response is being written share a
    chunk (one queue item per batch, not per fragment)."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[ToolCallDelta] = []

    def tool_call(self, fragment: ToolCallDelta) -> None:
        if self.closed:
            return
        if not self.calls:
            self.queue.put_nowait({"type": "tool_calls"})
        self.calls.append(fragment)

    def take_calls(self) -> list[ToolCallDelta]:
        calls, self.calls = self.calls, []
        return calls


def _tool_call_chunks(fragments: list[ToolCallDelta]) -> list[dict[str, Any]]:
    """Fragments as ``delta.tool_calls`` items; consecutive ones of one call are joined (a
    chunk names each call once, as OpenAI's do)."""
    items: list[dict[str, Any]] = []
    for fragment in fragments:
        last = items[-1] if items else None
        if last is not None and last["index"] == fragment.index and fragment.id is None:
            last["function"]["arguments"] += fragment.arguments
            if fragment.name and "name" not in last["function"]:
                last["function"]["name"] = fragment.name
            continue
        item: dict[str, Any] = {"index": fragment.index}
        if fragment.id is not None:
            item["id"] = fragment.id
            item["type"] = "function"
        function: dict[str, Any] = {}
        if fragment.name is not None:
            function["name"] = fragment.name
        function["arguments"] = fragment.arguments
        item["function"] = function
        items.append(item)
    return items


def _abandon(run: Reply) -> None:
    """The client went away: stop a reply nobody else could read."""
    if run.reply_id is None or app_settings.CANCEL_ON_DISCONNECT:
        run.stop()


def _abandon_started(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is None:
        _abandon(task.result())


def _upstream_error(frame: dict[str, Any]) -> JsonResponse:
    error = frame.get("error") or {"code": "incomplete", "message": "The reply failed."}
    return api_error(error["code"], error["message"], retry_after=error.get("retry_after"))


def _usage(frame: dict[str, Any]) -> dict[str, Any] | None:
    usage = frame.get("usage")
    if not usage:
        return None
    figures: dict[str, Any] = {
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"],
        "completion_tokens_details": {"reasoning_tokens": usage["reasoning_tokens"]},
    }
    if usage.get("cost") is not None:
        figures["cost"] = float(Decimal(usage["cost"]))  # USD, as OpenRouter reports it
    if usage.get("estimated"):
        # Upstream sent no usage: streamchat's estimate, which the ledger later replaces.
        figures["estimated"] = True
    return figures


def _finish_reason(frame: dict[str, Any]) -> str:
    reason = frame.get("finish_reason") or "stop"
    return reason if reason in FINISH_REASONS else "stop"


def _completion(run: Reply, completion_id: str, created: int) -> JsonResponse:
    frame = frames.finished(run.result) if run.result is not None else {}
    if frame.get("status") == "error" or not frame:
        return _upstream_error(frame)
    message: dict[str, Any] = {"role": "assistant", "content": run.text}
    if run.reasoning:
        message["reasoning"] = run.reasoning
    tool_calls = run.tool_calls
    if tool_calls:
        message["tool_calls"] = [call.as_openai() for call in tool_calls]
        message["content"] = run.text or None  # OpenAI's shape for a reply of calls only
    return JsonResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": frame.get("model") or run.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": _finish_reason(frame),
                    "logprobs": None,
                }
            ],
            "usage": _usage(frame),
        }
    )


async def _chunks(
    run: Reply,
    follower: ApiFollower,
    frame: dict[str, Any] | None,
    completion_id: str,
    created: int,
    include_usage: bool,
) -> AsyncIterator[str]:
    base = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": run.model,
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return _data({**base, "choices": [choice]})

    keepalive = app_settings.SSE_KEEPALIVE_SECONDS
    ended = False
    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            if frame is None:
                yield ": keep-alive\n\n"
            elif frame["type"] == "delta":
                yield chunk({"content": frame["text"]})
            elif frame["type"] == "reasoning":
                yield chunk({"reasoning": frame["text"]})  # OpenRouter's field for it
            elif frame["type"] == "tool_calls":
                calls = follower.take_calls()
                if calls:
                    yield chunk({"tool_calls": _tool_call_chunks(calls)})
            elif frame["type"] == "reply.finished":
                ended = True
                if frame["status"] == "error":
                    error = frame.get("error") or {}
                    yield _data(
                        {
                            "error": {
                                "message": error.get("message", "The reply failed."),
                                "type": "server_error",
                                "param": None,
                                "code": error.get("code", "incomplete"),
                            }
                        }
                    )
                    return
                yield chunk({}, _finish_reason(frame))
                if include_usage:
                    yield _data({**base, "choices": [], "usage": _usage(frame)})
                yield "data: [DONE]\n\n"
                return
            frame = await follower.get(keepalive)
    finally:
        follower.close()
        if not ended:
            _abandon(run)


def _data(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"
