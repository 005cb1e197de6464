"""Errors the chat entry points answer with: a stable code, a message fit to show a user."""

from __future__ import annotations

from typing import Any


class ChatError(Exception):
    """A refused request: ``code`` is one of docs/protocol.md's error codes."""

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

    def as_frame(self, **extra: Any) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "error", "code": self.code, "message": self.message}
        if self.field:
            frame["field"] = self.field
        if self.retry_after is not None:
            frame["retry_after"] = round(self.retry_after, 1)
        frame.update({k: v for k, v in extra.items() if v is not None})
        return frame


def not_found(what: str = "conversation") -> ChatError:
    # The same answer for another user's id and a missing one (WS-11).
    return ChatError("not_found", f"No such {what}.")
