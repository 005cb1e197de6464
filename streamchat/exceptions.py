"""Errors the entry points answer with, and the one table of their codes.

Every error a user or client can see is a ``StreamchatError``: a stable ``code`` and a ``message``
fit to show a user, plus ``field`` (the field at fault) and ``retry_after`` (seconds) where they
apply. ``ChatError`` (a refused request), ``streamchat.openrouter.errors.OpenRouterError`` (an
upstream failure) and ``streamchat.limits.LimitError`` (a send the limits refused) derive from it.

``CODES`` gives each code (docs/protocol.md, docs/http.md) its HTTP status and its OpenAI error
type; every front end reads it: the session JSON API and SSE through ``http_status``, the
OpenAI-compatible API through ``openai_error``, the websocket and ``reply.finished`` through
``StreamchatError.as_frame`` / ``as_dict`` (``error_frame``).

Messages are translated (gettext) when the error is made, into the active language: the request's
on HTTP (LocaleMiddleware), ``LANGUAGE_CODE`` elsewhere. Codes never are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from django.utils.translation import gettext as _


class StreamchatError(Exception):
    """An error with a stable ``code`` (a key of ``CODES``) and a ``message`` fit to show a user.

    ``public_code`` is the code users and clients see; it differs from ``code`` only where two
    sources share a code (OpenRouter's own 429, ``rate_limited``, is shown as
    ``upstream_rate_limited``, apart from our limits' ``rate_limited``). ``details``: more fields
    for clients, sent with the code in every front end's error (``fits_max_tokens`` of a budget
    refusal).
    """

    code: str
    message: str
    field: str | None = None
    retry_after: float | None = None

    def __init__(
        self,
        code: str,
        message: str,
        *,
        field: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after
        self.details: dict[str, Any] = {}

    @property
    def public_code(self) -> str:
        return self.code

    def as_frame(self, **extra: Any) -> dict[str, Any]:
        """The websocket / SSE ``error`` frame; ``extra`` fields that are None are left out."""
        frame: dict[str, Any] = {"type": "error", "code": self.public_code, "message": self.message}
        if self.field:
            frame["field"] = self.field
        if self.retry_after is not None:
            frame["retry_after"] = round(self.retry_after, 1)
        frame.update(self.details)
        frame.update({k: v for k, v in extra.items() if v is not None})
        return frame

    def as_dict(self) -> dict[str, Any]:
        """``{code, message, retry_after?}``: the ``error`` of a ``reply.finished`` frame."""
        data: dict[str, Any] = {"code": self.public_code, "message": self.message}
        if self.retry_after is not None:
            data["retry_after"] = round(self.retry_after, 1)
        data.update(self.details)
        return data


class ChatError(StreamchatError):
    """A refused request: ``code`` is one of docs/protocol.md's error codes."""


def not_found(what: str = "conversation") -> ChatError:
    # The same answer for another user's id and a missing one (WS-11).
    messages = {
        "conversation": _("No such conversation."),
        "message": _("No such message."),
        "reply": _("No such reply."),
        "attachment": _("No such attachment."),
    }
    return ChatError("not_found", messages.get(what) or _("Not found."))


def error_code(error: StreamchatError | None) -> str:
    """The code stored and logged for a reply's error: its ``public_code``, "" without one."""
    return "" if error is None else error.public_code


def error_frame(error: StreamchatError | None) -> dict[str, Any] | None:
    """The ``error`` of a ``reply.finished`` frame: ``error.as_dict()``, None without one."""
    return None if error is None else error.as_dict()


# --- The codes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """How the HTTP front ends answer one code.

    ``status``: the HTTP status of a refusal with this code. ``openai_type``: the ``type`` of the
    OpenAI-shaped error body. ``openai_code``: the code OpenAI clients see instead, when they have
    their own name for it; its own entry then gives the OpenAI status and type.
    """

    status: int
    openai_type: str
    openai_code: str | None = None


_INVALID = "invalid_request_error"
_SERVER = "server_error"
_RATE = "rate_limit_error"

CODES: dict[str, ErrorCode] = {
    # Refused requests (docs/protocol.md, docs/http.md).
    "bad_json": ErrorCode(400, _INVALID),
    "unsupported_data": ErrorCode(400, _INVALID),
    "invalid": ErrorCode(400, _INVALID),
    "unknown_type": ErrorCode(400, _INVALID),
    "model_unavailable": ErrorCode(400, _INVALID, openai_code="model_not_found"),
    "not_authenticated": ErrorCode(401, "authentication_error"),
    "auth_expired": ErrorCode(401, "authentication_error"),
    "csrf_failed": ErrorCode(403, "permission_error"),
    "not_found": ErrorCode(404, _INVALID),
    "method_not_allowed": ErrorCode(405, _INVALID),
    "busy": ErrorCode(409, _INVALID),
    "message_too_large": ErrorCode(413, _INVALID),
    # Attachments (docs/http.md): each refusal has its own code; nothing is stored for it.
    "attachment_too_large": ErrorCode(413, _INVALID),
    "attachment_type": ErrorCode(400, _INVALID),
    "too_many_attachments": ErrorCode(400, _INVALID),
    "model_cannot_read": ErrorCode(400, _INVALID),
    "rate_limited": ErrorCode(429, _RATE),
    "limits_unavailable": ErrorCode(503, _SERVER),
    "overloaded": ErrorCode(503, _SERVER),  # MAX_ACTIVE_REPLIES: try again after retry_after
    "unavailable": ErrorCode(503, _SERVER),  # the database is away: nothing was stored
    "workers_unreachable": ErrorCode(503, _SERVER),  # the channel layer (Redis) is away
    "server_restarting": ErrorCode(503, _SERVER),  # a draining worker: send again (elsewhere)
    "interrupted": ErrorCode(503, _SERVER),  # a reply its worker could not finish
    # The OpenAI-compatible API's own names.
    "invalid_api_key": ErrorCode(401, "authentication_error"),
    "model_not_found": ErrorCode(404, _INVALID),
    # What went wrong upstream (OpenRouterError.public_code): in reply.finished.error, or as the
    # OpenAI-compatible API's answer when it went wrong before any text.
    "bad_request": ErrorCode(400, _INVALID),
    "moderation": ErrorCode(400, _INVALID),
    "unknown_model": ErrorCode(404, _INVALID),
    "upstream_rate_limited": ErrorCode(429, _RATE),
    "no_api_key": ErrorCode(503, _SERVER),
    "invalid_key": ErrorCode(503, _SERVER),
    "out_of_credits": ErrorCode(503, _SERVER),
    "upstream_unavailable": ErrorCode(502, _SERVER),
    "connection_error": ErrorCode(502, _SERVER),
    "stream_error": ErrorCode(502, _SERVER),
    "incomplete": ErrorCode(502, _SERVER),
    "timeout": ErrorCode(504, _SERVER),
    "first_token_timeout": ErrorCode(504, _SERVER),
    "idle_timeout": ErrorCode(504, _SERVER),
    "total_timeout": ErrorCode(504, _SERVER),
    # A chat reply that wanted more tool rounds than MAX_TOOL_STEPS allows.
    "tool_steps": ErrorCode(502, _SERVER),
}

# What a code missing from CODES answers: a refusal on the session JSON API and SSE; an upstream
# failure on the OpenAI-compatible API.
DEFAULT_HTTP_STATUS = 400
DEFAULT_OPENAI_STATUS = 502


class OpenAIError(NamedTuple):
    """An error as the OpenAI-compatible API answers it."""

    status: int
    type: str
    code: str


def http_status(code: str) -> int:
    """The session JSON API's and SSE's status for ``code`` (400 when it is not in ``CODES``)."""
    entry = CODES.get(code)
    return entry.status if entry else DEFAULT_HTTP_STATUS


def openai_error(code: str) -> OpenAIError:
    """The OpenAI-compatible API's status, error type and code for ``code`` (502
    ``server_error`` when it is not in ``CODES``)."""
    entry = CODES.get(code)
    if entry is None:
        return OpenAIError(DEFAULT_OPENAI_STATUS, _SERVER, code)
    if entry.openai_code is not None:
        return openai_error(entry.openai_code)
    return OpenAIError(entry.status, entry.openai_type, code)


def unavailable() -> ChatError:
    """A request refused because the database cannot be reached (nothing was stored)."""
    return ChatError(
        "unavailable",
        _("The chat cannot reach its database right now, so nothing was sent. Try again shortly."),
        retry_after=5,
    )


def other_workers_unreachable() -> ChatError:
    """Following or stopping a reply that runs in another worker, while the channel layer is
    away."""
    return ChatError(
        "workers_unreachable",
        _(
            "This reply runs on another server, which cannot be reached right now."
            " Try again shortly."
        ),
        retry_after=5,
    )
