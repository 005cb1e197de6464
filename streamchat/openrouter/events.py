"""The typed events a reply stream yields. No SDK type crosses this line, so the transport under
the client can change without touching the engine, the consumers or the tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class ContentDelta:
    """Reply text, already cleaned (no NUL, no lone surrogates)."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """Thinking text from ``delta.reasoning``, cleaned like ContentDelta."""

    text: str


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Token counts and cost; when OpenRouter sends usage more than once, the last one wins."""

    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int = 0
    cost: Decimal | None = None  # USD, as OpenRouter reported it
    details: dict[str, Any] = field(default_factory=dict)
    # True when upstream reported no usage and these are streamchat's estimate (the Python API's
    # results; a stream's own reports are never estimated).
    estimated: bool = False


@dataclass(frozen=True, slots=True)
class Finish:
    """The reply ended normally: finish reason (stop, length, ...), model that answered, generation
    id, and the provider that served it."""

    reason: str
    model: str
    generation_id: str
    provider: str = ""


StreamEvent = ContentDelta | ReasoningDelta | UsageReport | Finish
