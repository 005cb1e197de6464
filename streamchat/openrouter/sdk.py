"""Shared ``openai`` SDK clients pointed at OpenRouter: one per (event loop, base URL, key).

A new ``AsyncOpenAI`` costs ~18 ms and ~1 MB (performance.md), so clients are cached. An async
client's connection pool belongs to the event loop it first ran on, hence one cache per loop; the
caches of closed loops are dropped when a new client is made. Retries are ours
(``client.open_stream``), so the SDK's are off (``max_retries=0``).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import openai
from django.views.decorators.debug import sensitive_variables

from ..conf import app_settings
from .errors import OpenRouterError, from_status

# /models needs no key; the SDK insists on one, so this stands in and the header is dropped.
NO_KEY = "no-key"
# Timeout (s) for the small JSON endpoints (/key, /models, /generation).
ACCOUNT_TIMEOUT = 30.0

_async_clients: dict[asyncio.AbstractEventLoop, dict[tuple[Any, ...], openai.AsyncOpenAI]] = {}
_sync_clients: dict[tuple[Any, ...], openai.OpenAI] = {}
_sync_lock = threading.Lock()


def attribution_headers() -> dict[str, str]:
    """``HTTP-Referer``, ``X-OpenRouter-Title`` and the legacy ``X-Title`` (empty ones left out)."""
    headers: dict[str, str] = {}
    if app_settings.APP_URL:
        headers["HTTP-Referer"] = app_settings.APP_URL
    if app_settings.APP_TITLE:
        headers["X-OpenRouter-Title"] = app_settings.APP_TITLE
        headers["X-Title"] = app_settings.APP_TITLE
    return headers


def _identity(secret: str) -> tuple[Any, ...]:
    headers = attribution_headers()
    return (app_settings.BASE_URL, secret, tuple(sorted(headers.items())))


@sensitive_variables("secret", "identity")
def async_client(secret: str) -> openai.AsyncOpenAI:
    """The shared async client for ``secret`` on the running event loop."""
    loop = asyncio.get_running_loop()
    identity = _identity(secret)
    clients = _async_clients.get(loop)
    if clients is not None:
        client = clients.get(identity)
        if client is not None:
            return client
    else:
        for old in [other for other in _async_clients if other.is_closed()]:
            del _async_clients[old]
        clients = _async_clients[loop] = {}
    client = clients[identity] = openai.AsyncOpenAI(
        api_key=secret,
        base_url=identity[0],
        default_headers=dict(identity[2]),
        max_retries=0,
        timeout=request_timeout(),
        # A plain httpx client, not the SDK's wrapper: the wrapper's __del__ schedules aclose()
        # on whatever loop is running, which fails for a client whose loop has closed.
        http_client=openai.DefaultAsyncHttpxClient(timeout=request_timeout()),
    )
    return client


async def aclose_clients() -> None:
    """Close the running loop's shared clients (e.g. at ASGI lifespan shutdown)."""
    clients = _async_clients.pop(asyncio.get_running_loop(), {})
    for client in clients.values():
        await client.close()


@sensitive_variables("secret", "identity")
def sync_client(secret: str) -> openai.OpenAI:
    """The shared sync client for ``secret`` (thread-safe; for admin actions and commands)."""
    identity = _identity(secret)
    with _sync_lock:
        client = _sync_clients.get(identity)
        if client is None:
            client = _sync_clients[identity] = openai.OpenAI(
                api_key=secret,
                base_url=identity[0],
                default_headers=dict(identity[2]),
                max_retries=0,
                timeout=account_timeout(),
            )
        return client


def request_timeout() -> openai.Timeout:
    """The SDK's own timeouts for a chat stream: connect, and the whole reply as a backstop.

    The SDK's read timeout restarts on every keep-alive comment, so the first-token and idle
    deadlines are enforced by the stream itself, not here.
    """
    return openai.Timeout(app_settings.TOTAL_TIMEOUT, connect=app_settings.CONNECT_TIMEOUT)


def account_timeout() -> openai.Timeout:
    return openai.Timeout(ACCOUNT_TIMEOUT, connect=app_settings.CONNECT_TIMEOUT)


def translate(exc: Exception, *, model: str = "") -> OpenRouterError:
    """The OpenRouterError for an exception the SDK raised before a response body was read."""
    if isinstance(exc, openai.APIStatusError):
        return from_status(exc.status_code, exc.body, exc.response.headers, model=model)
    if isinstance(exc, openai.APITimeoutError):
        return OpenRouterError("timeout", "OpenRouter did not answer in time.", retriable=True)
    if isinstance(exc, openai.APIConnectionError):
        return OpenRouterError(
            "connection_error", "Could not connect to OpenRouter.", retriable=True
        )
    return OpenRouterError("connection_error", f"OpenRouter request failed: {type(exc).__name__}.")
