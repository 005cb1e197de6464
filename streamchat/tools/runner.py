"""Running one tool call: arguments checked, the function run (sync ones in a thread, async ones
on the loop) within its timeout, and whatever happens turned into an ``Outcome`` the model is
told. Never raises for the tool's sake: an exception, a timeout, bad arguments or a tool the user
may not use are each an error result (the traceback goes to the log, never to the user).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from channels.db import DatabaseSyncToAsync

from ..conf import app_settings
from ..openrouter.events import ToolCall
from . import registry
from . import schema as schemas

logger = logging.getLogger("streamchat.tools")

SUMMARY_CHARS = 500  # what frames and the ToolCall row keep of a result
RESULT_CHARS = 16_000  # what the model is sent of a result: bounded like any prompt part


class ToolError(Exception):
    """Raise it in a tool to tell the model what went wrong (its message is sent as it is;
    any other exception is reported by its type only)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # ok, error, timeout, declined, denied
    content: str  # the tool message the model gets
    error: str = ""
    duration_ms: int = 0

    @property
    def summary(self) -> str:
        text = self.content
        return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


def refused(status: str, message: str) -> Outcome:
    return Outcome(status, f"Error: {message}", message)


def prepare(
    call: ToolCall, offered: Collection[str]
) -> tuple[registry.RegisteredTool, dict[str, Any]] | Outcome:
    """The tool and its arguments, or the error result the model gets instead."""
    item = registry.get(call.name) if call.name in offered else None
    if item is None:
        return refused("denied", f"the tool {call.name!r} is not available to this user.")
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError:
        return refused("error", "the arguments are not valid JSON.")
    problem = schemas.check(item.parameters, arguments)
    if problem is not None:
        return refused("error", problem)
    return item, arguments


async def run(item: registry.RegisteredTool, arguments: dict[str, Any], user: Any) -> Outcome:
    """Run ``item`` with checked ``arguments``. Cancelling it cancels an async tool; a sync one
    runs on in its thread and its result is dropped."""
    started = time.monotonic()
    kwargs = schemas.coerce(item.func, arguments)
    if item.wants_user:
        kwargs[schemas.USER_PARAMETER] = user
    timeout = item.timeout if item.timeout is not None else float(app_settings.TOOL_TIMEOUT)
    try:
        if item.is_async:
            result = await asyncio.wait_for(item.func(**kwargs), timeout)
        else:
            # Its own thread, not asgiref's shared one: a slow tool holds up no reply's ORM.
            call = DatabaseSyncToAsync(item.func, thread_sensitive=False)
            result = await asyncio.wait_for(call(**kwargs), timeout)
    except TimeoutError:
        return Outcome(
            "timeout",
            f"Error: the tool took longer than {timeout:g} seconds and was stopped.",
            "timeout",
            _ms(started),
        )
    except ToolError as error:
        return Outcome("error", f"Error: {error}", str(error)[:SUMMARY_CHARS], _ms(started))
    except Exception as error:
        logger.exception("streamchat: tool %s failed", item.name)
        name = type(error).__name__
        return Outcome("error", f"Error: the tool failed ({name}).", name, _ms(started))
    content = result if isinstance(result, str) else json.dumps(result, default=str)
    if len(content) > RESULT_CHARS:
        content = content[:RESULT_CHARS] + "… (cut)"
    return Outcome("ok", content, "", _ms(started))


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
