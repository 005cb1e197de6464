"""One error type for everything that can go wrong talking to OpenRouter."""

from __future__ import annotations


class OpenRouterError(Exception):
    """An upstream failure, with a stable ``code`` and a ``message`` fit to show a user.

    Codes: bad_request, invalid_key, out_of_credits, moderation, unknown_model, rate_limited,
    upstream_unavailable (5xx), timeout (408), first_token_timeout, idle_timeout, total_timeout,
    connection_error, stream_error (an error after HTTP 200), incomplete (ended without a finish),
    no_api_key. ``message`` never contains an API key.
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
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.retriable = retriable
        self.generation_id = generation_id

    def __repr__(self) -> str:
        return f"OpenRouterError({self.code!r}, {self.message!r}, status={self.status})"
