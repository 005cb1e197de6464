"""The typed events a reply stream yields. No SDK type crosses this line, so the transport under
the client can change without touching the engine, the consumers or the tests."""

from __future__ import annotations

from collections.abc import Iterable
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
class ToolCallDelta:
    """One fragment of a tool call (an item of ``delta.tool_calls``), as OpenRouter sent it.

    The first fragment of a call carries its ``id`` and ``name``; later ones only more
    ``arguments`` text. ``index`` says which call of the reply it belongs to (parallel calls may
    interleave). Relayed as is (the OpenAI-compatible API streams them back); whoever needs whole
    calls joins them with ``assemble_tool_calls``.
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A whole tool call, its fragments joined. ``arguments`` is the model's text, meant to be
    JSON but never checked here: a malformed one is for whoever runs the tool to refuse."""

    index: int
    id: str
    name: str
    arguments: str

    def as_openai(self) -> dict[str, Any]:
        """The call in OpenAI's ``message.tool_calls`` shape."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def assemble_tool_calls(fragments: Iterable[ToolCallDelta]) -> list[ToolCall]:
    """The calls the fragments make up, by ``index``: the first id and name seen, the arguments
    joined in order."""
    calls: dict[int, tuple[list[str], list[str], list[str]]] = {}
    for fragment in fragments:
        ids, names, arguments = calls.setdefault(fragment.index, ([], [], []))
        if fragment.id and not ids:
            ids.append(fragment.id)
        if fragment.name and not names:
            names.append(fragment.name)
        if fragment.arguments:
            arguments.append(fragment.arguments)
    return [
        ToolCall(
            index, ids[0] if ids else f"call_{index}", names[0] if names else "", "".join(texts)
        )
        for index, (ids, names, texts) in sorted(calls.items())
    ]


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


StreamEvent = ContentDelta | ReasoningDelta | ToolCallDelta | UsageReport | Finish
