"""Why a send was refused before any upstream call.

Our own limits answer ``rate_limited``; OpenRouter's 429s (its key limits) are a different code,
``upstream_rate_limited``, raised by the client, never here.
"""

from __future__ import annotations

from ..exceptions import StreamchatError


class LimitError(StreamchatError):
    """A send the limits refused: a stable ``code`` (set per class), a ``message`` fit to show a
    user, and ``retry_after``, the seconds until it can go through (None when waiting will not
    help)."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(type(self).code, message, retry_after=retry_after)


class LimitExceeded(LimitError):
    """A limit was hit; ``limit`` names it (a ``RateLimit`` field, e.g. "requests_per_minute").

    ``fits_max_tokens``: for a budget (tokens or spend), the largest ``max_tokens`` that would be
    admitted now (None: no reply fits, or a smaller reply would not help); also in ``details``.
    """

    code = "rate_limited"

    def __init__(
        self,
        limit: str,
        *,
        retry_after: float | None,
        message: str,
        fits_max_tokens: int | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.limit = limit
        self.fits_max_tokens = fits_max_tokens

    def __repr__(self) -> str:
        return f"LimitExceeded({self.limit!r}, retry_after={self.retry_after})"


class LimitsUnavailable(LimitError):
    """The limits could not be checked (the database failed) and ``LIMITS_FAIL_OPEN`` is off."""

    code = "limits_unavailable"
