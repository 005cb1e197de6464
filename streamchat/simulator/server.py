"""The simulator's HTTP routes: OpenRouter's wire protocol, over aiohttp.

Every response imitates OpenRouter's (error bodies, chunk shapes, the three usage placements,
keep-alive comments, ``X-Generation-Id``); openrouter-protocol.md in the project's shared notes
holds the sources. Client disconnects are noticed through aiohttp's handler cancellation, so a
stalled stream learns of an abort at once, not at its next write.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import struct
import time
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from . import catalog, parameters
from .replies import (
    DEFAULT_REPLY,
    REASONING,
    XSS_REPLY,
    count_prompt_tokens,
    describe_media,
    last_user_text,
    long_reply,
    media_parts,
    tokenize,
)
from .scenarios import IN_STREAM, PRE_STREAM, Scenario, parse
from .state import (
    Generation,
    RecordedRequest,
    ScriptedReply,
    SimKey,
    SimulatorState,
    new_generation_id,
)

STATE: web.AppKey[SimulatorState] = web.AppKey("state", SimulatorState)
USER_ID = "user_simulator"
KEEPALIVE = b": OPENROUTER PROCESSING\n\n"
DONE = b"data: [DONE]\n\n"
RAW_PLACEHOLDER = "__simulator_raw_piece__"


# Every answer says it comes from the simulator, so the chat page's "replies come from the
# simulator" banner follows the upstream itself, not its address (streamchat.upstream).
SIMULATOR_HEADER = "X-Streamchat-Simulator"


async def _mark_simulator(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[SIMULATOR_HEADER] = "1"


def create_app(state: SimulatorState) -> web.Application:
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app[STATE] = state
    app.on_response_prepare.append(_mark_simulator)
    app.router.add_post("/api/v1/chat/completions", chat_completions)
    app.router.add_get("/api/v1/models", models)
    app.router.add_get("/api/v1/key", key_info)
    app.router.add_get("/api/v1/auth/key", key_info)
    app.router.add_get("/api/v1/generation", generation)
    return app


# --- helpers ----------------------------------------------------------------------------------


def error_response(
    status: int,
    message: str,
    *,
    metadata: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    error: dict[str, Any] = {"code": status, "message": message}
    if metadata is not None:
        error["metadata"] = metadata
    return web.Response(
        status=status,
        body=orjson.dumps({"error": error, "user_id": USER_ID}),
        content_type="application/json",
        headers=headers,
    )


def leaked_key(request: web.Request, scenario: Scenario) -> str:
    """The request's own key in the forms ``leak`` names (``full``, ``bare``: without
    ``sk-or-v1-``, ``piece``: 12 characters from its middle), space-separated; "" without
    ``leak``. An upstream that echoes a key, for tests that it is masked wherever it lands."""
    forms = [name for name in scenario.str("leak", "").split(",") if name]
    if not forms:
        return ""
    key = request.headers.get("Authorization", "").partition(" ")[2].strip()
    bare = key.removeprefix("sk-or-v1-")
    middle = len(bare) // 2
    texts = {"full": key, "bare": bare, "piece": bare[middle - 6 : middle + 6]}
    return " ".join(texts[name] for name in forms if name in texts)


def leak_into(error: dict[str, Any], text: str) -> dict[str, Any]:
    """``error`` (an error object) echoing ``text`` in its message and in every metadata field:
    ``reasons``, ``raw``, ``provider_name`` and every other string."""
    given = error.get("metadata")
    metadata = {
        k: f"{v} {text}" if isinstance(v, str) else v
        for k, v in (given.items() if isinstance(given, dict) else ())
    }
    reasons = metadata.get("reasons")
    metadata["reasons"] = [*(reasons if isinstance(reasons, list) else []), text]
    raw = metadata.get("raw")
    metadata["raw"] = {**raw, "echo": text} if isinstance(raw, dict) else f"{raw or ''} {text}"
    metadata["provider_name"] = f"{metadata.get('provider_name') or 'Simulator'} {text}"
    return {**error, "message": f"{error.get('message', '')} ({text})", "metadata": metadata}


def leaking(response: web.Response, text: str) -> web.Response:
    """An error response whose body echoes ``text`` (``leak_into``)."""
    if text and isinstance(response.body, bytes):
        payload = orjson.loads(response.body)
        payload["error"] = leak_into(payload["error"], text)
        response.body = orjson.dumps(payload)
    return response


async def record(request: web.Request, body: Any = None) -> None:
    request.app[STATE].record(
        RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=CIMultiDict(request.headers),
            json=body,
        )
    )


def authenticate(request: web.Request) -> SimKey | web.Response:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return error_response(401, "No auth credentials found")
    key = request.app[STATE].lookup_key(token)
    if key is None or key.revoked:
        return error_response(401, "User not found.")
    return key


def dumps(payload: Any) -> bytes:
    """JSON bytes; text with lone surrogates (which orjson refuses) goes out as escapes."""
    try:
        return orjson.dumps(payload)
    except TypeError:
        return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode()


def as_text(piece: str | bytes) -> str:
    """A piece as text (raw bytes decoded with U+FFFD where they are not UTF-8)."""
    return piece.decode("utf-8", "replace") if isinstance(piece, bytes) else piece


def json_number(value: Decimal) -> float:
    return float(value)


# --- GET routes -------------------------------------------------------------------------------


async def models(request: web.Request) -> web.Response:
    await record(request)
    return web.json_response(
        {"data": catalog.model_list()}, dumps=lambda o: orjson.dumps(o).decode()
    )


async def key_info(request: web.Request) -> web.Response:
    await record(request)
    key = authenticate(request)
    if isinstance(key, web.Response):
        return key
    limit = None if key.limit is None else json_number(key.limit)
    remaining = None if key.limit is None else json_number(max(key.limit - key.usage, Decimal(0)))
    usage = json_number(key.usage)
    data = {
        "label": key.label,
        "limit": limit,
        "limit_remaining": remaining,
        "limit_reset": None,
        "include_byok_in_limit": False,
        "usage": usage,
        "usage_daily": usage,
        "usage_weekly": usage,
        "usage_monthly": usage,
        "byok_usage": 0,
        "byok_usage_daily": 0,
        "byok_usage_weekly": 0,
        "byok_usage_monthly": 0,
        "is_free_tier": False,
        "is_management_key": False,
        "is_provisioning_key": False,
        "expires_at": None,
        "rate_limit": {
            "requests": 1000,
            "interval": "1h",
            "note": "This field is deprecated and safe to ignore.",
        },
    }
    return web.Response(body=orjson.dumps({"data": data}), content_type="application/json")


async def generation(request: web.Request) -> web.Response:
    await record(request)
    key = authenticate(request)
    if isinstance(key, web.Response):
        return key
    generation_id = request.query.get("id", "")
    if not generation_id:
        return error_response(400, "Missing required parameter: id")
    found = request.app[STATE].visible_generation(generation_id)
    if found is None:
        return error_response(404, f"Generation {generation_id} not found")
    return web.Response(
        body=orjson.dumps({"data": found.as_json()}), content_type="application/json"
    )


# --- chat completions -------------------------------------------------------------------------


def in_stream_fault(state: SimulatorState, scenario: Scenario, model_id: str) -> Scenario:
    """``scenario``, or a plain reply from its model once an in-stream fault with ``times=N``
    has failed the first N requests for this exact id (query string included)."""
    times = scenario.int("times", 0)  # 0: every time
    if scenario.name in IN_STREAM and times and state.bump(model_id) > times:
        return Scenario("default", scenario.model, scenario.params)
    return scenario


def pre_stream_failure(
    state: SimulatorState, scenario: Scenario, model_id: str, body: dict
) -> web.Response | None:
    """The HTTP error a scenario answers before streaming, or None to go on."""
    if "image" not in catalog.input_modalities(scenario.model) and any(
        part.get("type") == "image_url" for part in media_parts(body.get("messages") or [])
    ):
        # OpenRouter's answer when no provider of the model reads images.
        return error_response(404, "No endpoints found that support image input")
    if scenario.name not in PRE_STREAM:
        return None
    times = scenario.int("times", 0)  # 0: every time
    if times and state.bump(model_id) > times:
        return None
    retry_after = scenario.str("retry_after", "1")
    headers = {"Retry-After": retry_after} if retry_after not in ("", "none") else {}
    if scenario.name == "rate-limit":
        reset_ms = str(int((time.time() + 60) * 1000))
        return error_response(
            429,
            "Rate limit exceeded: free-models-per-min.",
            metadata={
                "headers": {
                    "X-RateLimit-Limit": "20",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": reset_ms,
                },
                "provider_name": None,
            },
            headers={
                **headers,
                "X-RateLimit-Limit": "20",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": reset_ms,
            },
        )
    if scenario.name == "server-error":
        status = scenario.int("status", 502)
        if status == 503:
            message = "No available model provider that meets your routing requirements"
        elif status >= 502:
            message = "Provider returned error"
        else:
            message = "Internal Server Error"
        return error_response(
            status,
            message,
            metadata={"provider_name": "Simulator", "raw": "upstream failed"},
            headers=headers if "retry_after" in scenario.params else None,
        )
    if scenario.name == "timeout":
        return error_response(408, "Request timed out")
    if scenario.name == "key-error":  # what OpenRouter answers for a key it refuses
        if scenario.int("status", 401) == 402:
            return error_response(
                402,
                "Insufficient credits. Add more using https://openrouter.ai/credits",
                metadata={"limit_source": "openrouter_credits"},
            )
        return error_response(401, "User not found.")
    if scenario.name == "in-flight-budget":
        return error_response(
            402,
            "Too many requests in flight for your remaining credits. Retry shortly.",
            metadata={
                "limit_source": "openrouter_in_flight_budget",
                "reason": "in_flight_budget_exhausted",
            },
            headers=headers,
        )
    if scenario.name == "moderation":
        flagged = last_user_text(body.get("messages") or [])[:100]
        return error_response(
            403,
            f"{scenario.model} requires moderation on Simulator. "
            'Your input was flagged for "harassment".',
            metadata={
                "reasons": ["harassment"],
                "flagged_input": flagged,
                "provider_name": "Simulator",
                "model_slug": scenario.model,
            },
        )
    # unknown-model
    return error_response(400, f"{model_id} is not a valid model ID")


def reply_for(
    scenario: Scenario, body: dict, scripted: ScriptedReply | None
) -> tuple[str, str | None]:
    """Text and reasoning of the reply."""
    reasoning = (
        REASONING if scenario.name == "reasoning" or catalog.is_reasoning(scenario.model) else None
    )
    if scripted is not None:
        text = parameters.cut_at_stop(scripted.text, body.get("stop"))
        return text, scripted.reasoning if scripted.reasoning is not None else reasoning
    messages = body.get("messages") or []
    if scenario.name == "inspect":
        return parameters.inspect_reply(body), reasoning
    after_tools = parameters.tool_result_reply(messages) if body.get("tools") else None
    if after_tools is not None:
        text = after_tools
    elif scenario.name == "echo" or scenario.flag("echo", False):
        text = last_user_text(messages)
    elif scenario.name == "long":
        text = long_reply(scenario.int("tokens", 5000))
    elif scenario.name == "xss":
        text = XSS_REPLY
    else:
        text = parameters.seeded(DEFAULT_REPLY, body.get("seed"))
    described = describe_media(messages)
    if described is not None:  # what it was shown comes first, so tests see it was sent
        text = f"{described}\n\n{text}"
    text = parameters.json_mode(text, body.get("response_format"))
    return parameters.cut_at_stop(text, body.get("stop")), reasoning


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        await record(request, None)
        return error_response(400, "Invalid JSON in request body")
    await record(request, body)
    key = authenticate(request)
    if isinstance(key, web.Response):
        return key
    if not isinstance(body, dict):
        return error_response(400, "Request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return error_response(400, 'Input required: specify "prompt" or "messages"')
    if key.exhausted:
        return error_response(
            402,
            "This request requires more credits, or fewer max_tokens. You requested up to "
            "16384 tokens, but can only afford 0. To increase, visit "
            "https://openrouter.ai/settings/credits and add more credits",
            metadata={"limit_source": "openrouter_credits"},
        )

    requested = body.get("model") or "openai/gpt-4o-mini"
    candidates = [requested]
    fallbacks = body.get("models")
    if isinstance(fallbacks, list):
        candidates += [m for m in fallbacks if isinstance(m, str) and m not in candidates]
    failure: web.Response | None = None
    scenario: Scenario | None = None
    for candidate in candidates:
        scenario = parse(candidate) if isinstance(candidate, str) else None
        if scenario is None:
            failure = error_response(400, f"{candidate} is not a valid model ID")
            continue
        failure = pre_stream_failure(state, scenario, candidate, body)
        if failure is None:
            break
        failure = leaking(failure, leaked_key(request, scenario))
        scenario = None
    if scenario is None:
        assert failure is not None
        return failure

    scenario = in_stream_fault(state, scenario, candidate)
    scripted = state.take_reply()
    text, reasoning = reply_for(scenario, body, scripted)
    calls = parameters.tool_calls_for(scenario, body) if scripted is None else None
    run = Run(request, state, key, scenario, body, text, reasoning, scripted, calls)
    if body.get("stream"):
        return await run.stream()
    return await run.complete()


def tool_calls_of(pieces: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """The whole calls the tool pieces delivered make up (a non-streamed reply's
    ``message.tool_calls``)."""
    calls: dict[int, dict[str, Any]] = {}
    for kind, piece in pieces:
        if kind != "tool":
            continue
        index, call_id, name, arguments = piece
        if call_id is not None:
            calls[index] = {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
        elif index in calls:
            calls[index]["function"]["arguments"] += arguments
    return [calls[index] for index in sorted(calls)]


class Dropped(Exception):
    """The simulator cut the connection on purpose (the ``drop`` scenario)."""


class Run:
    """One generation: its pieces, timing, faults and accounting."""

    def __init__(
        self,
        request: web.Request,
        state: SimulatorState,
        key: SimKey,
        scenario: Scenario,
        body: dict,
        text: str,
        reasoning: str | None,
        scripted: ScriptedReply | None = None,
        tool_calls: list[tuple[str, str]] | None = None,
    ) -> None:
        self.request = request
        self.state = state
        self.config = state.config
        self.key = key
        self.scenario = scenario
        self.body = body
        self.model = scenario.model
        self.leak = leaked_key(request, scenario)
        self.provider = catalog.provider(scenario.model)
        if self.leak:  # the provider's name echoes the key too, in every chunk
            self.provider = f"{self.provider} {self.leak}"
        pieces: list[tuple[str, Any]] = [("reasoning", t) for t in tokenize(reasoning or "")]
        self.finish_reason = "stop"
        if tool_calls:
            # A call's first fragment names it (arguments ""), the arguments follow in pieces.
            for index, (name, arguments) in enumerate(tool_calls):
                call_id = f"call_{secrets.token_hex(8)}"
                pieces.append(("tool", (index, call_id, name, "")))
                pieces += [("tool", (index, None, None, t)) for t in tokenize(arguments)]
            self.finish_reason = "tool_calls"
        elif scripted is not None and scripted.pieces is not None:
            pieces += [("content", t) for t in scripted.pieces]
        else:
            pieces += [("content", t) for t in tokenize(text)]
        self.split_characters = scripted is not None and scripted.split_characters
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(max_tokens, int) and 0 < max_tokens < len(pieces):
            pieces = pieces[:max_tokens]
            self.finish_reason = "length"
        self.pieces = pieces
        self.sent = 0  # pieces delivered
        self.reasoning_sent = 0
        self.generation = Generation(
            id=new_generation_id(),
            model=self.model,
            provider=self.provider,
            key=key.secret,
            streamed=bool(body.get("stream")),
            prompt_tokens=count_prompt_tokens(body.get("messages") or []),
        )
        state.add_generation(self.generation)
        ms = scenario.float("delay_ms", None)
        self.token_delay = self.config.token_delay if ms is None else ms / 1000
        ms = scenario.float("first_ms", None)
        self.first_delay = self.config.first_token_delay if ms is None else ms / 1000
        if scenario.name == "slow-first":
            self.first_delay = scenario.float("delay", 3.0) or 0.0
        ms = scenario.float("keepalive_ms", None)
        self.keepalive = self.config.keepalive_interval if ms is None else ms / 1000
        self.usage_variant = scenario.str("usage", self.config.usage_variant).upper()
        self.response: web.StreamResponse | None = None
        self.dropped = False

    # --- accounting --------------------------------------------------------------------------
    def settle(
        self, *, cancelled: bool = False, finish_reason: str | None = None
    ) -> dict[str, Any]:
        """Fix the generation's tokens and cost, charge the key, and return the usage object."""
        gen = self.generation
        if gen.ended_at is None:
            gen.completion_tokens = self.sent
            gen.reasoning_tokens = self.reasoning_sent
            prompt_price, completion_price = catalog.prices(self.model)
            prompt_cost = prompt_price * gen.prompt_tokens
            completion_cost = completion_price * gen.completion_tokens
            gen.cost = prompt_cost + completion_cost
            gen.finish_reason = finish_reason
            self.state.charge(self.key, gen.cost)
            self.state.end_generation(gen, cancelled=cancelled)
        prompt_price, completion_price = catalog.prices(self.model)
        return {
            "prompt_tokens": gen.prompt_tokens,
            "completion_tokens": gen.completion_tokens,
            "total_tokens": gen.prompt_tokens + gen.completion_tokens,
            "cost": json_number(gen.cost),
            "is_byok": False,
            "prompt_tokens_details": {
                "cached_tokens": 0,
                "cache_write_tokens": 0,
                "audio_tokens": 0,
                "video_tokens": 0,
            },
            "cost_details": {
                "upstream_inference_cost": json_number(gen.cost),
                "upstream_inference_prompt_cost": json_number(prompt_price * gen.prompt_tokens),
                "upstream_inference_completions_cost": json_number(
                    completion_price * gen.completion_tokens
                ),
            },
            "completion_tokens_details": {
                "reasoning_tokens": gen.reasoning_tokens,
                "image_tokens": 0,
                "audio_tokens": 0,
            },
        }

    # --- non-streaming -----------------------------------------------------------------------
    async def complete(self) -> web.StreamResponse:
        name = self.scenario.name
        try:
            if self.first_delay:
                await asyncio.sleep(self.first_delay)
            if name in ("error-body", "error-mid"):
                self.settle(finish_reason="error")
                error = {"code": 502, "message": "Provider returned error"}
                return web.Response(
                    body=orjson.dumps(
                        {
                            "error": leak_into(error, self.leak) if self.leak else error,
                            "user_id": USER_ID,
                        }
                    ),
                    content_type="application/json",
                    headers={"X-Generation-Id": self.generation.id},
                )
            if name == "drop":
                self.drop()
                raise Dropped
            if name == "stall":
                await asyncio.sleep(self.scenario.float("for", 3600.0) or 0.0)
        except asyncio.CancelledError:
            if not self.dropped:
                self.settle(cancelled=True)
                self.state.client_gone(self.generation, 0)
            raise
        self.sent = len(self.pieces)
        self.reasoning_sent = sum(1 for kind, _ in self.pieces if kind == "reasoning")
        finish: str | None = self.finish_reason
        if name == "cut":
            self.sent = min(self.sent, self.scenario.int("after", 5))
            finish = None
        usage = self.settle(finish_reason=finish)
        delivered = self.pieces[: self.sent]
        content: str | None = "".join(as_text(t) for kind, t in delivered if kind == "content")
        reasoning = "".join(as_text(t) for kind, t in delivered if kind == "reasoning") or None
        calls = tool_calls_of(delivered)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": content or (None if calls else ""),
            "refusal": None,
            "reasoning": reasoning,
        }
        if calls:
            message["tool_calls"] = calls
        body = {
            "id": self.generation.id,
            "provider": self.provider,
            "model": self.model,
            "object": "chat.completion",
            "created": int(self.generation.created),
            "system_fingerprint": "fp_simulator",
            "choices": [
                {
                    "logprobs": None,
                    "finish_reason": finish,
                    "native_finish_reason": finish,
                    "index": 0,
                    "message": message,
                }
            ],
            "usage": usage,
        }
        return web.Response(
            body=orjson.dumps(body),
            content_type="application/json",
            headers={"X-Generation-Id": self.generation.id},
        )

    # --- streaming ---------------------------------------------------------------------------
    def chunk(self, delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
        raw = delta.get("content") if delta is not None else None
        if isinstance(raw, bytes):  # a scripted piece of raw bytes: verbatim in the JSON string
            delta = {**delta, "content": RAW_PLACEHOLDER}  # type: ignore[dict-item]
        payload: dict[str, Any] = {
            "id": self.generation.id,
            "provider": self.provider,
            "model": self.model,
            "object": "chat.completion.chunk",
            "created": int(self.generation.created),
            "choices": []
            if delta is None
            else [
                {
                    "index": 0,
                    "delta": delta,
                    "finish_reason": finish,
                    "native_finish_reason": finish,
                    "logprobs": None,
                }
            ],
            "system_fingerprint": "fp_simulator",
            **extra,
        }
        data = dumps(payload)
        if isinstance(raw, bytes):
            data = data.replace(b'"' + RAW_PLACEHOLDER.encode() + b'"', b'"' + raw + b'"', 1)
        return b"data: " + data + b"\n\n"

    async def write(self, data: bytes) -> None:
        assert self.response is not None
        if self.split_characters:
            # Cut after the lead byte of the first multi-byte character (0b11xxxxxx).
            cut = next((i + 1 for i, byte in enumerate(data) if byte >= 0xC0), 0)
            if cut:
                await self.response.write(data[:cut])
                await asyncio.sleep(max(self.token_delay, 0.01))
                data = data[cut:]
        await self.response.write(data)

    async def wait(self, seconds: float, *, comments: bool) -> None:
        """Sleep, sending keep-alive comments every ``keepalive`` seconds when asked."""
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if not comments:
                await asyncio.sleep(remaining)
                return
            await asyncio.sleep(min(self.keepalive, remaining))
            if time.monotonic() < deadline:
                await self.write(KEEPALIVE)

    def drop(self) -> None:
        """Reset the TCP connection (RST) or close it mid-body (FIN), as ``mode`` says."""
        self.dropped = True
        transport = self.request.transport
        if transport is None:
            return
        if self.scenario.str("mode", "rst") == "rst":
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()

    async def stream(self) -> web.StreamResponse:
        self.response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Generation-Id": self.generation.id,
                "Access-Control-Expose-Headers": "X-Generation-Id",
            },
        )
        await self.response.prepare(self.request)
        try:
            await self.produce()
        except asyncio.CancelledError:
            # aiohttp cancels the handler when the client's connection is lost.
            self.gone()
            raise
        except (ConnectionResetError, ConnectionError):
            self.gone()
            return self.response
        except Dropped:
            self.settle(finish_reason=None)
            raise asyncio.CancelledError from None
        return self.response

    def gone(self) -> None:
        if self.dropped:
            self.settle(finish_reason=None)
            return
        self.settle(cancelled=True)
        self.state.client_gone(self.generation, self.sent)

    async def produce(self) -> None:
        name, sc = self.scenario.name, self.scenario
        if self.first_delay > 0:
            await self.write(KEEPALIVE)
            await self.wait(self.first_delay, comments=True)
        after = sc.int("after", 0 if name == "error-mid" else 5)
        await self.write(self.chunk({"role": "assistant", "content": ""}))
        for index, (kind, piece) in enumerate(self.pieces):
            if index == after and name in ("error-mid", "drop", "cut", "stall"):
                if await self.fault():
                    return
            if index and self.token_delay:
                await asyncio.sleep(self.token_delay)
            if kind == "tool":
                index, call_id, name, arguments = piece
                fragment: dict[str, Any] = {"index": index}
                if call_id is not None:
                    fragment.update(id=call_id, type="function")
                fragment["function"] = (
                    {"name": name, "arguments": arguments}
                    if name is not None
                    else {"arguments": arguments}
                )
                delta = {"role": "assistant", "content": None, "tool_calls": [fragment]}
            elif kind == "reasoning":
                delta = {
                    "role": "assistant",
                    "content": "",
                    "reasoning": piece,
                    "reasoning_details": [
                        {"type": "reasoning.text", "text": piece, "format": "unknown", "index": 0}
                    ],
                }
                self.reasoning_sent += 1
            else:
                delta = {"role": "assistant", "content": piece}
            await self.write(self.chunk(delta))
            self.sent += 1
        if len(self.pieces) <= after and name in ("error-mid", "drop", "cut", "stall"):
            if await self.fault():
                return
        await self.finish()

    async def finish(self, *, done: bool = True) -> None:
        end = {"role": "assistant", "content": ""}
        usage = self.settle(finish_reason=self.finish_reason)
        await self.write(self.chunk(end, self.finish_reason))
        variant = self.usage_variant
        if variant == "A":
            await self.write(self.chunk(None, usage=usage))
        elif variant == "B":
            await self.write(self.chunk(end, None, usage=usage))
        elif variant == "C":
            await self.write(self.chunk(end, self.finish_reason, usage=usage))
        if done:
            await self.write(DONE)

    async def fault(self) -> bool:
        """Misbehave as the scenario says; True when the stream is over."""
        name, sc = self.scenario.name, self.scenario
        if name == "error-mid":
            raw_code = sc.str("code", "502")
            code: int | str = int(raw_code) if raw_code.isdigit() else raw_code
            error = {
                "code": code,
                "message": sc.str("message", "Provider disconnected unexpectedly"),
                "metadata": {"provider_name": self.provider, "raw": {"retryable": True}},
            }
            if self.leak:
                error = leak_into(error, self.leak)
            end = {"role": "assistant", "content": ""}
            if sc.str("shape", "top") == "choice":
                payload = self.chunk(None)[len(b"data: ") : -2]
                data = orjson.loads(payload)
                data["choices"] = [
                    {
                        "index": 0,
                        "delta": end,
                        "finish_reason": "error",
                        "native_finish_reason": "error",
                        "error": error,
                    }
                ]
                await self.write(b"data: " + orjson.dumps(data) + b"\n\n")
            else:
                await self.write(self.chunk(end, "error", error=error))
            usage = self.settle(finish_reason="error")
            if sc.flag("usage_after", False):
                await self.write(self.chunk(None, usage=usage))
            if sc.flag("done", False):
                await self.write(DONE)
            return True
        if name == "drop":
            if sc.str("mode", "rst") != "rst":
                await self.write(b'data: {"id":"' + self.generation.id.encode())
            self.drop()
            raise Dropped
        if name == "cut":
            if sc.flag("finish", False):
                await self.finish(done=False)
            else:
                self.settle(finish_reason=None)
            return True
        # stall: nothing (or only comments) for `for` seconds (default: until the client leaves)
        await self.wait(sc.float("for", 3600.0) or 0.0, comments=sc.flag("comments", False))
        return False
