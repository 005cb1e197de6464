"""Tools: the site's own Python functions, called by the model during a chat reply.

``@streamchat.tools.tool`` registers one; the engine (``streaming.reply``) offers the tools a
user may use, runs the calls the model makes (``runner``) and continues the reply.
"""

from .registry import (
    RegisteredAssistant,
    RegisteredTool,
    all_tools,
    assistant,
    get,
    offered_to,
    register_tool,
    tool,
    unregister,
)
from .runner import ToolError

__all__ = [
    "RegisteredAssistant",
    "RegisteredTool",
    "ToolError",
    "all_tools",
    "assistant",
    "get",
    "offered_to",
    "register_tool",
    "tool",
    "unregister",
]
