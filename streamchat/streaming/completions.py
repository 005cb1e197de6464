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

import re
from typing import Any

from ..exceptions import ChatError
from ..text import clean_text
from .store import ModelChoice

# OpenAI's "developer" role is its newer name for "system".
ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}
MAX_MESSAGES = 2000
MAX_TOOL_CALLS = 128  # per assistant message
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def validate_messages(value: Any) -> list[dict[str, Any]]:
    """OpenAI-shaped ``messages`` as the turns sent upstream: ``{"role", "content"}`` (text only,
    cleaned), plus an assistant turn's ``tool_calls``, a tool turn's ``tool_call_id``, and a
    ``name``. A tool turn must answer a call of an earlier assistant turn. Other keys of a message
    (``refusal``, ``annotations``… that the SDKs echo back) are not sent."""
    if not isinstance(value, list) or not value:
        raise ChatError("invalid", "messages must be a non-empty list.", field="messages")
    if len(value) > MAX_MESSAGES:
        raise ChatError(
            "invalid", f"At most {MAX_MESSAGES} messages are accepted.", field="messages"
        )
    turns: list[dict[str, Any]] = []
    called: set[str] = set()  # tool call ids of the assistant turns so far
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise ChatError("invalid", f"{where} must be an object.", field=where)
        role = ROLES.get(message.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise ChatError(
                "invalid",
                f"{where}.role must be one of system, developer, user, assistant, tool.",
                field=f"{where}.role",
            )
        turn: dict[str, Any] = {
            "role": role,
            "content": clean_text(_text_of(message.get("content"), where)),
        }
        name = message.get("name")
        if name is not None:
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise ChatError(
                    "invalid",
                    f"{where}.name must be 1 to 64 letters, digits, _ or -.",
                    field=f"{where}.name",
                )
            turn["name"] = name
        if role == "assistant" and message.get("tool_calls") is not None:
            turn["tool_calls"] = _tool_calls(message["tool_calls"], f"{where}.tool_calls")
            called.update(call["id"] for call in turn["tool_calls"])
            if message.get("content") is None:
                turn["content"] = None  # as the model sent it: some providers refuse ""
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in called:
                raise ChatError(
                    "invalid",
                    f"{where}: a tool message needs the tool_call_id of a call made by an "
                    "earlier assistant message.",
                    field=f"{where}.tool_call_id",
                )
            turn["tool_call_id"] = call_id
        turns.append(turn)
    if not any(turn["role"] == "user" for turn in turns):
        raise ChatError("invalid", "messages need at least one user message.", field="messages")
    return turns


def _tool_calls(value: Any, where: str) -> list[dict[str, Any]]:
    """An assistant message's ``tool_calls`` (the ones the model made), in OpenAI's shape."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_TOOL_CALLS:
        raise ChatError(
            "invalid", f"{where} must be a list of 1 to {MAX_TOOL_CALLS} calls.", field=where
        )
    calls = []
    for index, call in enumerate(value):
        at = f"{where}[{index}]"
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(function, dict)
            or call.get("type", "function") != "function"
            or not isinstance(call.get("id"), str)
            or not _ID.fullmatch(call["id"])
            or not isinstance(function.get("name"), str)
            or not _NAME.fullmatch(function["name"])
            or not isinstance(function.get("arguments", ""), str)
        ):
            raise ChatError(
                "invalid",
                f'{at} must be {{"id", "type": "function", "function": {{"name", "arguments"}}}} '
                "with a string id, a function name and arguments as a string.",
                field=at,
            )
        calls.append(
            {
                "id": call["id"],
                "type": "function",
                "function": {
                    "name": function["name"],
                    "arguments": clean_text(function.get("arguments", "")),
                },
            }
        )
    return calls


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


def upstream_messages(turns: list[dict[str, Any]], choice: ModelChoice) -> list[dict[str, Any]]:
    """What is sent: the model's system prompt (the admin's, as on the chat page), then the
    request's own messages as they are (the client chose its context: nothing is trimmed)."""
    system = [{"role": "system", "content": choice.system_prompt}] if choice.system_prompt else []
    return system + [dict(turn) for turn in turns]


def stored_turns(turns: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The turns a stored exchange keeps as its conversation's messages: what the chat page can
    show (system, user and assistant text). Tool results and calls are not kept: the chat has no
    place for them yet."""
    return [
        {"role": turn["role"], "content": turn["content"]}
        for turn in turns
        if turn["role"] == "user" or (turn["role"] != "tool" and turn["content"])
    ]
