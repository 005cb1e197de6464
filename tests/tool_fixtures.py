"""Tools the tool tests register (tests/test_tools.py), in the test process and in the live
servers' (``tests.toolsite``): for users whose name starts with ``tooler`` only, so no other test
sees them (``t_staff`` keeps the default, staff only)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Literal

from streamchat.tools import ToolError, tool


def for_toolers(user: Any) -> bool:
    return user.get_username().startswith("tooler")


gate = threading.Event()  # what t_block waits for (a tool still running)


@tool(permission=for_toolers)
def t_echo(text: str, times: int = 1) -> str:
    """Echo the text."""
    return "echo:" + text * times


@tool(permission=for_toolers)
def t_pick(colour: Literal["red", "blue"]) -> dict[str, str]:
    """Pick a colour."""
    return {"picked": colour}


@tool(permission=for_toolers)
def t_boom() -> str:
    """Always fails."""
    raise ValueError("secret detail /etc/passwd")


@tool(permission=for_toolers)
def t_refuse() -> str:
    """Fails with a message for the model."""
    raise ToolError("no such order")


@tool(permission=for_toolers, timeout=0.2)
async def t_slow() -> str:
    """Never answers in time."""
    await asyncio.sleep(30)
    return "late"


@tool(permission=for_toolers)
def t_block() -> str:
    """Runs until the test lets it end."""
    gate.wait(20)
    return "unblocked"


@tool(permission=for_toolers, confirm=True)
def t_change(item: str) -> str:
    """Changes data: the user approves first."""
    return f"changed:{item}"


@tool(permission=for_toolers)
def t_whoami(user: Any) -> str:
    """The acting user."""
    return user.get_username()


@tool
def t_staff() -> str:
    """Staff only (the default)."""
    return "staff secret"
