"""Requests that carry their own messages (the OpenAI-compatible API): how the engine checks them
and what it sends upstream; their rows, when stored, are written by ``store.create_exchange_rows``.
``engine.acomplete_messages`` is the entry point.

Such a request is answered by the same ``ReplyRun`` as a chat message (limits, keys, failover,
usage ledger). Whether the exchange is also stored as a conversation is the
``API_STORE_CONVERSATIONS`` setting: stored, it gets a conversation with the messages it sent and
the reply as a normal reply row (shown on the chat page, followable and stoppable by id); not
stored (the default), the run has no Message row and leaves only its Usage row.
"""

from __future__ import annotations

from typing import Any

from ..exceptions import ChatError
from ..text import clean_text
from .store import ModelChoice

# OpenAI's "developer" role is its newer name for "system".
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_MESSAGES = 2000


def validate_messages(value: Any) -> list[dict[str, str]]:
    """OpenAI-shaped ``messages`` as plain ``{"role", "content"}`` turns (text only, cleaned)."""
    if not isinstance(value, list) or not value:
        raise ChatError("invalid", "messages must be a non-empty list.", field="messages")
    if len(value) > MAX_MESSAGES:
        raise ChatError(
            "invalid", f"At most {MAX_MESSAGES} messages are accepted.", field="messages"
        )
    turns: list[dict[str, str]] = []
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise ChatError("invalid", f"{where} must be an object.", field=where)
        role = ROLES.get(message.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise ChatError(
                "invalid",
                f"{where}.role must be one of system, developer, user, assistant "
                "(tools are not supported).",
                field=f"{where}.role",
            )
        turns.append({"role": role, "content": clean_text(_text_of(message.get("content"), where))})
    if not any(turn["role"] == "user" for turn in turns):
        raise ChatError("invalid", "messages need at least one user message.", field="messages")
    return turns


def _text_of(content: Any, where: str) -> str:
    """A message's text: a string, or a list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise ChatError(
                    "invalid", f"{where}.content: only text parts are supported.", field=where
                )
            if not isinstance(part.get("text"), str):
                raise ChatError("invalid", f"{where}.content: a text part needs text.", field=where)
            texts.append(part["text"])
        return "".join(texts)
    raise ChatError("invalid", f"{where}.content must be a string or text parts.", field=where)


def upstream_messages(turns: list[dict[str, str]], choice: ModelChoice) -> list[dict[str, Any]]:
    """What is sent: the model's system prompt (the admin's, as on the chat page), then the
    request's own messages as they are (the client chose its context: nothing is trimmed)."""
    system = [{"role": "system", "content": choice.system_prompt}] if choice.system_prompt else []
    return system + [dict(turn) for turn in turns]
