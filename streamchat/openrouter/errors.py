"""One error type for everything that can go wrong talking to OpenRouter."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from ..exceptions import StreamchatError
from ..scrub import scrub, scrub_data

# OpenRouter's own 429 is kept apart from our limits' ``rate_limited`` in what users and admins see.
PUBLIC_CODES = {"rate_limited": "upstream_rate_limited"}


class OpenRouterError(StreamchatError):
    """An upstream failure, with a stable ``code`` and a ``message`` fit to show a user.

    Codes: bad_request, invalid_key, out_of_credits, moderation, unknown_model, rate_limited,
    upstream_unavailable (5xx), timeout (408), first_token_timeout, idle_timeout, total_timeout,
    connection_error, stream_error (an error after HTTP 200), incomplete (ended without a finish),
    no_api_key, not_found (a /generation record that did not appear in time). ``message`` never
    contains an API key. ``public_code`` is what users see: ``rate_limited`` reads
    ``upstream_rate_limited``.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        retriable: bool = False,
        generation_id: str = "",
    ) -> None:
        # The one place every upstream failure passes: whatever built the message (an error
        # body, its metadata, a mid-stream chunk), no key or token leaves here (SEC-07).
        super().__init__(code, scrub(message), retry_after=retry_after)
        self.status = status
        self.retriable = retriable
        self.generation_id = generation_id

    @property
    def public_code(self) -> str:
        return PUBLIC_CODES.get(self.code, self.code)

    def __repr__(self) -> str:
        return f"OpenRouterError({self.code!r}, {self.message!r}, status={self.status})"


# --- Turning what OpenRouter answered into an OpenRouterError ---------------------------------

# Statuses OpenRouter (or its edge) uses for a provider that is down or overloaded.
_UNAVAILABLE = {500, 502, 503, 504, 520, 522, 524, 529}


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(float(value) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _upstream_message(body: Any) -> tuple[str, dict[str, Any]]:
    """The message and metadata of an OpenRouter error body (inner ``error`` object or whole)."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if isinstance(body, dict):
        metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        return scrub(str(body.get("message") or "")), scrub_data(metadata)
    if isinstance(body, str):
        return scrub(body[:500]), {}
    return "", {}


def from_status(
    status: int, body: Any, headers: Mapping[str, str] | None = None, *, model: str = ""
) -> OpenRouterError:
    """The error for a non-2xx answer before the stream started."""
    upstream, metadata = _upstream_message(body)
    retry_after = parse_retry_after(headers)
    detail = f" ({upstream})" if upstream else ""
    if status == 400 and ("valid model" in upstream or "model ID" in upstream):
        return OpenRouterError(
            "unknown_model",
            f"OpenRouter does not know the model {model!r}. Model ids carry the provider prefix, "
            "e.g. openai/gpt-4o.",
            status=status,
        )
    if status == 401:
        return OpenRouterError(
            "invalid_key", f"OpenRouter rejected the API key{detail}.", status=status
        )
    if status == 402:
        if (
            metadata.get("limit_source") == "openrouter_in_flight_budget"
            and retry_after is not None
        ):
            return OpenRouterError(
                "out_of_credits",
                f"Too many requests in flight for the account's credits; try again in "
                f"{_seconds(retry_after)}.",
                status=status,
                retry_after=retry_after,
                retriable=True,
            )
        return OpenRouterError(
            "out_of_credits", f"The OpenRouter key is out of credits{detail}.", status=status
        )
    if status == 403:
        reasons = metadata.get("reasons")
        why = f": {', '.join(map(str, reasons))}" if isinstance(reasons, list) and reasons else ""
        return OpenRouterError(
            "moderation",
            f"The request was refused by moderation{why}." + (f" {upstream}" if upstream else ""),
            status=status,
        )
    if status == 408:
        return OpenRouterError(
            "timeout", "OpenRouter timed out waiting for the model.", status=status, retriable=True
        )
    if status == 429:
        when = f"in {_seconds(retry_after)}" if retry_after is not None else "shortly"
        return OpenRouterError(
            "rate_limited",
            f"Rate limited by OpenRouter; try again {when}.",
            status=status,
            retry_after=retry_after,
            retriable=True,
        )
    if status in _UNAVAILABLE or status >= 500:
        return OpenRouterError(
            "upstream_unavailable",
            f"The model provider is unavailable (HTTP {status}){detail}; try again shortly.",
            status=status,
            retry_after=retry_after,
            retriable=True,
        )
    if status == 404 and ("valid model" in upstream or "model ID" in upstream):
        return from_status(400, body, headers, model=model)
    return OpenRouterError(
        "bad_request", f"OpenRouter refused the request (HTTP {status}){detail}.", status=status
    )


def _seconds(value: float) -> str:
    return f"{math.ceil(value)} s"
