"""What a reply sends upstream: the model's system prompt and the branch of messages it answers,
trimmed to fit the model's context length."""

from __future__ import annotations

from typing import Any

from ..models import Message
from .store import ModelChoice, estimate_tokens

# Replies with no text of their own add nothing to the context.
_SKIPPED = {Message.Status.PENDING, Message.Status.STREAMING}


def build_messages(
    branch: list[Message], model: ModelChoice, max_tokens: int | None
) -> list[dict[str, Any]]:
    """OpenAI-shaped messages for ``branch`` (oldest first, ending with the user's question).

    When the branch does not fit the model's context length, the oldest turns are dropped; the
    system prompt and the question itself are always kept.
    """
    turns = [
        {"role": m.role, "content": m.content}
        for m in branch
        if m.content and m.role in ("user", "assistant") and m.status not in _SKIPPED
    ]
    system = [{"role": "system", "content": model.system_prompt}] if model.system_prompt else []
    if model.context_length:
        budget = (
            model.context_length
            - (max_tokens or 0)
            - sum(estimate_tokens(m["content"]) for m in system)
        )
        kept: list[dict[str, Any]] = []
        used = 0
        for turn in reversed(turns):
            cost = estimate_tokens(turn["content"]) + 4  # a few tokens of framing per message
            if kept and used + cost > budget:
                break
            kept.append(turn)
            used += cost
        turns = list(reversed(kept))
    return system + turns


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """A message's tool calls count like text (an API client's assistant turn may hold only
    calls, its content None)."""
    total = 0
    for message in messages:
        total += estimate_tokens(message.get("content") or "") + 4
        for call in message.get("tool_calls") or ():
            total += estimate_tokens(call["function"]["arguments"]) + 4
    return total
