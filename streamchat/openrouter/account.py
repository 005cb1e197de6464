"""OpenRouter's small JSON endpoints: the key's account (``/key``), the model list (``/models``)
and one generation's record (``/generation``). Sync functions serve Django admin and management
commands; the ``a``-prefixed twins serve async code. Failures raise ``OpenRouterError``.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import openai
from django.views.decorators.debug import sensitive_variables

from .errors import OpenRouterError
from .sdk import NO_KEY, account_timeout, async_client, sync_client, translate

# /generation answers 404 until the record propagates (often > 500 ms): poll with backoff.
GENERATION_WAIT = 20.0  # seconds, default total wait
GENERATION_FIRST_DELAY = 0.25  # seconds before the second try; doubles up to GENERATION_MAX_DELAY
GENERATION_MAX_DELAY = 4.0


def _options(secret: str | None, params: dict[str, Any] | None = None) -> dict[str, Any]:
    options: dict[str, Any] = {"timeout": account_timeout()}
    if params:
        options["params"] = params
    if not secret:
        options["headers"] = {"Authorization": openai.Omit()}
    return options


def _data(payload: Any, path: str) -> Any:
    if isinstance(payload, dict) and "data" in payload:
        return payload["data"]
    raise OpenRouterError("bad_request", f"OpenRouter answered {path} with an unexpected body.")


@sensitive_variables("secret")
def _get(secret: str | None, path: str, params: dict[str, Any] | None = None) -> Any:
    try:
        payload = sync_client(secret or NO_KEY).get(
            path, cast_to=object, options=_options(secret, params)
        )
    except openai.OpenAIError as exc:
        raise translate(exc) from None
    return _data(payload, path)


@sensitive_variables("secret")
async def _aget(secret: str | None, path: str, params: dict[str, Any] | None = None) -> Any:
    try:
        payload = await async_client(secret or NO_KEY).get(
            path, cast_to=object, options=_options(secret, params)
        )
    except openai.OpenAIError as exc:
        raise translate(exc) from None
    return _data(payload, path)


@sensitive_variables("secret")
def get_key_info(secret: str) -> dict[str, Any]:
    """The key's ``data`` from ``GET /key``: label, limit, limit_remaining, usage, is_free_tier…"""
    return _get(secret, "/key")


@sensitive_variables("secret")
async def aget_key_info(secret: str) -> dict[str, Any]:
    return await _aget(secret, "/key")


def list_models(secret: str | None = None) -> list[dict[str, Any]]:
    """``GET /models``: OpenRouter's model entries (prices are strings, USD per token)."""
    return list(_get(secret, "/models"))


async def alist_models(secret: str | None = None) -> list[dict[str, Any]]:
    return list(await _aget(secret, "/models"))


@sensitive_variables("secret")
def get_generation(generation_id: str, secret: str, *, wait: float = 0.0) -> dict[str, Any]:
    """One generation's record (cost, tokens, ``cancelled``...), polling up to ``wait`` seconds.

    OpenRouter answers 404 for a while after a generation ends; past ``wait`` that raises
    ``OpenRouterError`` with code ``not_found``.
    """
    deadline = time.monotonic() + wait
    attempt = 0
    while True:
        try:
            return _get(secret, "/generation", {"id": generation_id})
        except OpenRouterError as error:
            delay = _next_delay(error, attempt, deadline)
        time.sleep(delay)
        attempt += 1


@sensitive_variables("secret")
async def aget_generation(
    generation_id: str, secret: str, *, wait: float = GENERATION_WAIT
) -> dict[str, Any]:
    """``get_generation`` for async code; by default waits out the usual 404 window."""
    deadline = time.monotonic() + wait
    attempt = 0
    while True:
        try:
            return await _aget(secret, "/generation", {"id": generation_id})
        except OpenRouterError as error:
            delay = _next_delay(error, attempt, deadline)
        await asyncio.sleep(delay)
        attempt += 1


def _next_delay(error: OpenRouterError, attempt: int, deadline: float) -> float:
    """How long to wait before asking again, or raise when it is no use."""
    missing = error.status == 404
    if not (missing or error.retriable):
        raise error
    delay = min(GENERATION_FIRST_DELAY * 2**attempt, GENERATION_MAX_DELAY)
    delay = delay / 2 + random.uniform(0, delay / 2)  # jitter, never zero
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        if missing:
            raise OpenRouterError(
                "not_found", "OpenRouter has no record of this generation yet.", status=404
            )
        raise error
    return min(delay, remaining)
