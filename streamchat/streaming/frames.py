"""Protocol frames (docs/protocol.md) from engine events: one place for the websocket and SSE.

``finished_event`` rebuilds the ``Finished`` event of a reply that already ended, from its rows,
for a follower that arrives late (another worker, a reload, the reaper's announcement).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ..models import Message, Usage
from .events import Finished, ReplyError, Started, UsageFigures


def ack(started: Started) -> dict[str, Any]:
    return {
        "type": "ack",
        "client_id": started.client_id,
        "conversation": started.conversation_id,
        "message": started.message_id,
        "reply": started.reply_id,
        "duplicate": started.duplicate,
    }


def reply_started(started: Started) -> dict[str, Any]:
    return {
        "type": "reply.started",
        "conversation": started.conversation_id,
        "reply": started.reply_id,
        "parent": started.parent_id,
        "model": started.model,
        "client_id": started.client_id,
    }


def conversation_updated(conversation_id: int, title: str) -> dict[str, Any]:
    return {"type": "conversation.updated", "conversation": conversation_id, "title": title}


def text(kind: str, reply_id: int | None, offset: int, text: str) -> dict[str, Any]:
    """A ``delta`` or ``reasoning`` frame."""
    return {"type": kind, "reply": reply_id, "offset": offset, "text": text}


def tool_call(
    reply_id: int | None, step: int, offset: int, call_id: str, name: str, arguments: str
) -> dict[str, Any]:
    """The model called a tool (``arguments``: its JSON text, as the model wrote it)."""
    return {
        "type": "tool.call",
        "reply": reply_id,
        "step": step,
        "offset": offset,
        "call": call_id,
        "name": name,
        "arguments": arguments,
    }


def tool_confirm(
    reply_id: int | None, step: int, call_id: str, name: str, arguments: str, seconds: float
) -> dict[str, Any]:
    """A ``confirm=True`` tool waits for the user's decision (``expires_in`` seconds)."""
    return {
        "type": "tool.confirm",
        "reply": reply_id,
        "step": step,
        "call": call_id,
        "name": name,
        "arguments": arguments,
        "expires_in": seconds,
    }


def tool_result(
    reply_id: int | None, step: int, call_id: str, status: str, summary: str, duration_ms: int
) -> dict[str, Any]:
    return {
        "type": "tool.result",
        "reply": reply_id,
        "step": step,
        "call": call_id,
        "status": status,
        "summary": summary,
        "duration_ms": duration_ms,
    }


def stored_tool_frames(reply_id: int) -> list[dict[str, Any]]:
    """``tool.call`` and ``tool.result`` frames of the calls a reply stored (a follower that
    arrives late, from another worker or after a reload)."""
    from ..models import ToolCall

    found: list[dict[str, Any]] = []
    for row in ToolCall.objects.filter(message_id=reply_id).order_by("id"):
        found.append(
            tool_call(reply_id, row.step, row.offset, row.call_id, row.tool_name, row.arguments)
        )
        found.append(
            tool_result(reply_id, row.step, row.call_id, row.status, row.result, row.duration_ms)
        )
    return found


def usage(figures: UsageFigures | None) -> dict[str, Any] | None:
    if figures is None:
        return None
    return {
        "prompt_tokens": figures.prompt_tokens,
        "completion_tokens": figures.completion_tokens,
        "reasoning_tokens": figures.reasoning_tokens,
        "cost": str(figures.cost) if figures.cost is not None else None,
        "estimated": figures.estimated,
    }


def error(reply_error: ReplyError | None) -> dict[str, Any] | None:
    if reply_error is None:
        return None
    frame: dict[str, Any] = {"code": reply_error.code, "message": reply_error.message}
    if reply_error.retry_after is not None:
        frame["retry_after"] = round(reply_error.retry_after, 1)
    return frame


def finished(event: Finished) -> dict[str, Any]:
    return {
        "type": "reply.finished",
        "reply": event.reply_id,
        "conversation": event.conversation_id,
        "status": event.status,
        "finish_reason": event.finish_reason,
        "model": event.model,
        "length": event.length,
        "usage": usage(event.usage),
        "ttft_ms": event.ttft_ms,
        "error": error(event.error),
    }


def finished_from(frame: dict[str, Any]) -> Finished:
    """The ``Finished`` event a ``reply.finished`` frame (or channel-layer event) describes."""
    figures = frame.get("usage")
    reply_error = frame.get("error")
    return Finished(
        reply_id=frame["reply"],
        conversation_id=frame.get("conversation"),
        status=frame["status"],
        finish_reason=frame.get("finish_reason", ""),
        model=frame.get("model", ""),
        length=frame.get("length", 0),
        usage=UsageFigures(
            prompt_tokens=figures["prompt_tokens"],
            completion_tokens=figures["completion_tokens"],
            reasoning_tokens=figures["reasoning_tokens"],
            cost=None if figures.get("cost") is None else _decimal(figures["cost"]),
            estimated=bool(figures.get("estimated")),
        )
        if figures
        else None,
        ttft_ms=frame.get("ttft_ms"),
        error=ReplyError(
            reply_error["code"], reply_error["message"], reply_error.get("retry_after")
        )
        if reply_error
        else None,
    )


def _decimal(value: Any) -> Any:
    from decimal import Decimal

    return Decimal(str(value))


def finished_event(reply: Message) -> Finished:
    """The ``Finished`` event of a reply that already ended, from its rows. Its usage sums the
    reply's usage rows (one per upstream request: a reply with tool steps has several), as
    the live ``reply.finished`` does; its time to first token is the first request's."""
    rows = list(reply.usage.order_by("id"))
    known = [row for row in rows if row.cost_source != Usage.CostSource.UNKNOWN]
    return Finished(
        reply_id=reply.pk,
        conversation_id=reply.conversation_id,
        status=reply.status,
        finish_reason=reply.finish_reason,
        model=reply.model,
        length=len(reply.content),
        usage=UsageFigures(
            prompt_tokens=sum(row.prompt_tokens for row in rows),
            completion_tokens=sum(row.completion_tokens for row in rows),
            reasoning_tokens=sum(row.reasoning_tokens for row in rows),
            cost=sum((row.cost for row in known), Decimal(0)) if known else None,
            estimated=any(row.cost_source == Usage.CostSource.ESTIMATED for row in rows),
        )
        if rows
        else None,
        ttft_ms=rows[0].time_to_first_token_ms if rows else None,
        error=ReplyError(reply.error_code, reply.error_message) if reply.error_code else None,
    )


def deleted(reply_id: int, conversation_id: int | None, model: str, length: int) -> Finished:
    """A followed reply whose conversation was deleted meanwhile."""
    return Finished(
        reply_id=reply_id,
        conversation_id=conversation_id,
        status=Message.Status.ERROR,
        finish_reason="error",
        model=model,
        length=length,
        usage=None,
        ttft_ms=None,
        error=ReplyError("not_found", "The reply was deleted."),
    )
