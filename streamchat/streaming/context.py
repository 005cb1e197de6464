"""What a reply sends upstream: the model's system prompt and the branch of messages it answers,
trimmed to fit the model's context length."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import attachments as attachments_
from ..models import Attachment, Message
from .store import ModelChoice, estimate_tokens

# Replies with no text of their own add nothing to the context.
_SKIPPED = {Message.Status.PENDING, Message.Status.STREAMING}


def build_messages(
    branch: list[Message],
    model: ModelChoice,
    max_tokens: int | None,
    attachments: Mapping[int | None, Sequence[Attachment]] | None = None,
) -> list[dict[str, Any]]:
    """OpenAI-shaped messages for ``branch`` (oldest first, ending with the user's question).

    When the branch does not fit the model's context length, the oldest turns are dropped; the
    system prompt and the question itself are always kept. ``attachments``: each user message's
    (by id; the unsaved question's under None), sent as content parts (``build_context``).
    """
    return build_context(branch, model, max_tokens, attachments).messages


@dataclass(frozen=True, slots=True)
class Context:
    """What a chat reply sends upstream, and its attachments' estimated prompt tokens (which
    ``estimate_prompt_tokens``, reading text only, does not count)."""

    messages: list[dict[str, Any]]
    media_tokens: int = 0
    has_pdf: bool = False


def build_context(
    branch: list[Message],
    model: ModelChoice,
    max_tokens: int | None,
    attachments: Mapping[int | None, Sequence[Attachment]] | None = None,
) -> Context:
    """``build_messages`` with the attachments' share of the prompt. A turn's attachments count
    in the trimming by their documented estimates (``attachments.tokens_of``); files are read
    only for the turns kept. An earlier turn's attachment the model cannot read (another model
    was used then) is left out with a note in its place; the question's own were checked
    before (``model_cannot_read``)."""
    files = attachments or {}
    turns = [
        (m, files.get(m.pk, ()) if m.role == Message.Role.USER else ())
        for m in branch
        if m.role in ("user", "assistant")
        and m.status not in _SKIPPED
        and (m.content or files.get(m.pk))
    ]
    system = [{"role": "system", "content": model.system_prompt}] if model.system_prompt else []
    if model.context_length:
        budget = (
            model.context_length
            - (max_tokens or 0)
            - sum(estimate_tokens(m["content"]) for m in system)
        )
        kept: list[tuple[Message, Sequence[Attachment]]] = []
        used = 0
        for message, own in reversed(turns):
            # A few tokens of framing per message, and each attachment's estimate.
            cost = estimate_tokens(message.content) + 4 + sum(_tokens(a) for a in own)
            if kept and used + cost > budget:
                break
            kept.append((message, own))
            used += cost
        turns = list(reversed(kept))
    messages: list[dict[str, Any]] = list(system)
    media = 0
    has_pdf = False
    for message, own in turns:
        readable = [
            a for a in own if attachments_.readable_by(a.content_type, model.input_modalities)
        ]
        if not own:
            messages.append({"role": message.role, "content": message.content})
            continue
        parts: list[dict[str, Any]] = []
        text = message.content
        for left_out in (a for a in own if a not in readable):
            text += f"\n[{left_out.filename}: not sent; this model cannot read it]"
        if text:
            parts.append({"type": "text", "text": text})
        for attachment in readable:
            url = attachments_.data_url(attachment.content_type, attachments_.read(attachment))
            parts.append(attachments_.part(attachment.content_type, url, attachment.filename))
            media += _tokens(attachment)
            has_pdf = has_pdf or attachment.content_type == attachments_.PDF
        messages.append({"role": message.role, "content": parts})
    return Context(messages, media, has_pdf)


def _tokens(attachment: Attachment) -> int:
    return attachments_.tokens_of(
        attachment.content_type, attachment.width, attachment.height, attachment.pages
    )


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """A message's tool calls count like text (an API client's assistant turn may hold only
    calls, its content None). Of content parts, only text counts here: attachments are counted
    where they are known (``Context.media_tokens``, ``completions.Turns.media_tokens``)."""
    total = 0
    for message in messages:
        content = message.get("content") or ""
        if isinstance(content, list):
            content = "".join(p.get("text") or "" for p in content if p.get("type") == "text")
        total += estimate_tokens(content) + 4
        for call in message.get("tool_calls") or ():
            total += estimate_tokens(call["function"]["arguments"]) + 4
    return total
