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
from dataclasses import dataclass
from typing import Any

from .. import attachments
from ..conf import app_settings
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
MAX_URL_CHARS = 2048  # an https image or file URL, passed on as it is
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class Turns:
    """A request's checked messages, and the estimated prompt tokens of their images and files
    (``attachments.tokens_of``; an https URL's size is unknown: the largest image estimate, or
    ``UNKNOWN_PDF_PAGES`` pages)."""

    turns: list[dict[str, Any]]
    media_tokens: int = 0


UNKNOWN_PDF_PAGES = 10


def validate_messages(value: Any) -> list[dict[str, Any]]:
    """``validate_turns`` without the attachments' estimate."""
    return validate_turns(value).turns


def has_media(value: Any) -> bool:
    """Whether ``messages`` hold any part that is not text (checking those blocks: Pillow)."""
    return isinstance(value, list) and any(
        isinstance(m, dict)
        and isinstance(m.get("content"), list)
        and any(not isinstance(p, dict) or p.get("type") != "text" for p in m["content"])
        for m in value
    )


def validate_turns(value: Any) -> Turns:
    """OpenAI-shaped ``messages`` as the turns sent upstream: ``{"role", "content"}`` (text,
    cleaned; a user turn's ``image_url`` and ``file`` parts make its content a list of parts:
    ``_media_parts``), plus an assistant turn's ``tool_calls``, a tool turn's ``tool_call_id``,
    and a ``name``. A tool turn must answer a call of an earlier assistant turn. Other keys of a
    message (``refusal``, ``annotations``… that the SDKs echo back) are not sent. Sync: images are
    decoded and checked here (run it in a thread when ``has_media``)."""
    if not isinstance(value, list) or not value:
        raise ChatError("invalid", "messages must be a non-empty list.", field="messages")
    if len(value) > MAX_MESSAGES:
        raise ChatError(
            "invalid", f"At most {MAX_MESSAGES} messages are accepted.", field="messages"
        )
    turns: list[dict[str, Any]] = []
    media = 0
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
        content = message.get("content")
        if role == "user" and isinstance(content, list) and has_media([message]):
            parts, tokens = _media_parts(content, where)
            media += tokens
            turn: dict[str, Any] = {"role": role, "content": parts}
        else:
            turn = {"role": role, "content": clean_text(_text_of(content, where))}
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
    return Turns(turns, media)


def _media_parts(content: list[Any], where: str) -> tuple[list[dict[str, Any]], int]:
    """A user message's parts: text (cleaned), ``image_url`` and ``file`` (PDF). A data URL is
    decoded and checked by content like an upload (size, type, pages; an image re-encoded
    without metadata) and sent as the checked bytes; an https URL is passed on as it is (never
    fetched here). At most ``ATTACHMENTS_PER_MESSAGE`` images and files."""
    parts: list[dict[str, Any]] = []
    tokens = 0
    files = 0
    for index, part in enumerate(content):
        at = f"{where}.content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise ChatError("invalid", f"{at}: a text part needs text.", field=at)
            parts.append({"type": "text", "text": clean_text(part["text"])})
            continue
        if kind not in ("image_url", "file"):
            raise ChatError(
                "invalid", f"{at}: only text, image_url and file parts are supported.", field=at
            )
        files += 1
        if files > app_settings.ATTACHMENTS_PER_MESSAGE:
            error = attachments.too_many()
            error.field = at
            raise error
        if kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            detail = image.get("detail") if isinstance(image, dict) else None
            if not isinstance(url, str) or detail not in (None, "auto", "low", "high"):
                raise ChatError(
                    "invalid",
                    f'{at} must be {{"type": "image_url", "image_url": {{"url": ..., '
                    '"detail"?: "auto" | "low" | "high"}}.',
                    field=at,
                )
            sent, cost = _media_url(url, at, image=True, filename="")
            out: dict[str, Any] = {"url": sent}
            if detail is not None:
                out["detail"] = detail
            parts.append({"type": "image_url", "image_url": out})
        else:
            file = part.get("file")
            data = file.get("file_data") if isinstance(file, dict) else None
            name = file.get("filename", "document.pdf") if isinstance(file, dict) else None
            if not isinstance(data, str) or not isinstance(name, str):
                raise ChatError(
                    "invalid",
                    f'{at} must be {{"type": "file", "file": {{"filename": ..., "file_data": '
                    '"data:application/pdf;base64,…" or an https URL}} (file ids are not '
                    "supported).",
                    field=at,
                )
            sent, cost = _media_url(data, at, image=False, filename=name)
            parts.append(attachments.part(attachments.PDF, sent, clean_text(name)[:200]))
        tokens += cost
    return parts, tokens


def _media_url(url: str, at: str, *, image: bool, filename: str) -> tuple[str, int]:
    """What to send for a part's URL, and its estimated tokens."""
    if url.startswith("https://"):
        if len(url) > MAX_URL_CHARS:
            raise ChatError(
                "invalid", f"{at}: URLs are limited to {MAX_URL_CHARS} characters.", field=at
            )
        if image:
            return url, attachments.IMAGE_MAX_TOKENS
        return url, attachments.PDF_PAGE_TOKENS * UNKNOWN_PDF_PAGES
    _declared, data = attachments.decode_data_url(url, at)
    checked = attachments.check(data, filename, where=at)
    if image != (checked.content_type in attachments.IMAGE_TYPES):
        raise ChatError(
            "attachment_type",
            f"{at}: an image_url part needs an image, a file part a PDF.",
            field=at,
        )
    cost = attachments.tokens_of(checked.content_type, checked.width, checked.height, checked.pages)
    return attachments.data_url(checked.content_type, checked.data), cost


def check_readable(turns: list[dict[str, Any]], choice: ModelChoice) -> None:
    """``model_cannot_read`` naming the first image or file part the model does not read."""
    for index, turn in enumerate(turns):
        content = turn.get("content")
        if not isinstance(content, list):
            continue
        for number, part in enumerate(content):
            kind = part["type"]
            if kind == "text":
                continue
            content_type = "image/png" if kind == "image_url" else attachments.PDF
            if not attachments.readable_by(content_type, choice.input_modalities):
                raise attachments.cannot_read(
                    content_type, choice.model_id, f"messages[{index}].content[{number}]"
                )


def has_file_parts(turns: list[dict[str, Any]]) -> bool:
    """Whether any turn sends a PDF (then OpenRouter's file-parser plugin options go along)."""
    return any(
        isinstance(turn.get("content"), list)
        and any(part["type"] == "file" for part in turn["content"])
        for turn in turns
    )


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
    texts = [
        (turn["role"], _text_only(turn["content"]))
        for turn in turns
        if turn["role"] == "user" or (turn["role"] != "tool" and turn["content"])
    ]
    return [{"role": role, "content": content} for role, content in texts]


def _text_only(content: Any) -> str:
    """A stored exchange keeps a message's text (its images and files are not stored)."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if part["type"] == "text")
    return content or ""
