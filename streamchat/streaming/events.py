"""The engine's typed events: what a reply tells whoever follows it.

Per delta the engine calls ``Follower.push(kind, offset, text)`` (no object is built per token);
``Started`` and ``Finished`` are built once per reply. ``frames`` turns them into protocol frames
(docs/protocol.md) for the websocket and SSE, and ``http/openai_compat`` into OpenAI chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, Protocol

from ..exceptions import StreamchatError

DeltaKind = Literal["delta", "reasoning"]


@dataclass(frozen=True, slots=True)
class UsageFigures:
    """A finished reply's tokens and cost, as the usage ledger holds them (``cost`` None: no
    price known). ``estimated``: upstream reported no usage (a stopped or failed reply), so the
    figures are streamchat's estimate until OpenRouter's own arrive (``reply.usage``)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cost: Decimal | None = None
    estimated: bool = False


@dataclass(frozen=True, slots=True)
class Started:
    """A reply was admitted and its rows stored (or found again for a repeated client id)."""

    conversation_id: int
    message_id: int  # the user message it answers
    reply_id: int
    parent_id: int | None
    model: str
    client_id: str
    duplicate: bool = False
    title: str = ""
    new_conversation: bool = False


@dataclass(frozen=True, slots=True)
class ReplyError:
    """Why a reply failed: a public code (docs/protocol.md), a message fit to show a user."""

    code: str
    message: str
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Finished:
    """A reply ended, however it ended. ``reply_id`` is None for an API exchange not stored."""

    reply_id: int | None
    conversation_id: int | None
    status: str
    finish_reason: str
    model: str
    length: int  # code points of reply text
    usage: UsageFigures | None
    ttft_ms: int | None
    error: ReplyError | None = None


class Follower(Protocol):
    """Something that shows one reply to someone: a websocket, an SSE or API response."""

    def push(self, kind: DeltaKind, offset: int, text: str) -> None:
        """New ``kind`` text at ``offset`` (code points); called per delta: keep it cheap."""

    async def finished(self, event: Finished) -> None:
        """The reply ended."""


def error_from(error: StreamchatError | None) -> ReplyError | None:
    """The ``ReplyError`` of one of streamchat's errors (its public code: OpenRouter's own 429 is
    ``upstream_rate_limited``, apart from our limits' ``rate_limited``)."""
    if error is None:
        return None
    return ReplyError(error.public_code, error.message, error.retry_after)
