"""The tool registry: the host's Python functions the model may call, and who may use them.

``@tool`` registers a plain function (sync or async) under its name; its JSON Schema comes from
the signature (``schema.describe``). Each registered tool has a ``Tool`` row (synced after
``migrate`` and on first use) so admins can list them and switch one off. ``offered_to(user)``
is what a chat reply offers the model: the tools enabled in admin that the user may use.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from .. import snapshots
from . import schema as schemas

F = TypeVar("F", bound=Callable[..., Any])

Permission = str | Callable[[Any], bool] | None


@dataclass(frozen=True)
class RegisteredTool:
    name: str
    description: str
    func: Callable[..., Any]
    parameters: dict[str, Any]
    wants_user: bool
    permission: Permission = None  # None: staff only
    confirm: bool = False  # it changes data: the user approves each call
    timeout: float | None = None  # None: the TOOL_TIMEOUT setting
    is_async: bool = field(default=False)

    def allowed(self, user: Any) -> bool:
        """May ``user`` have the model call this tool? (Sync: may query the database.)"""
        if user is None or not getattr(user, "is_authenticated", False):
            return False
        if not getattr(user, "is_active", True):
            return False
        if self.permission is None:
            return bool(getattr(user, "is_staff", False))
        if isinstance(self.permission, str):
            return bool(user.has_perm(self.permission))
        return bool(self.permission(user))

    def spec(self) -> dict[str, Any]:
        """The tool as the request's ``tools`` lists it."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


_tools: dict[str, RegisteredTool] = {}
_lock = threading.Lock()
_synced = False


@overload
def tool(func: F) -> F: ...
@overload
def tool(
    func: None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    permission: Permission = None,
    confirm: bool = False,
    timeout: float | None = None,
) -> Callable[[F], F]: ...
def tool(
    func: Any = None,
    *,
    name: str | None = None,
    description: str | None = None,
    permission: Permission = None,
    confirm: bool = False,
    timeout: float | None = None,
) -> Any:
    """Register a function as a tool the model may call (docs: README "Give the model your
    site's functions"). ``permission``: None (staff only), a Django permission string, or a
    callable ``(user) -> bool``. ``confirm=True``: the user approves every call first."""

    def register(function: F) -> F:
        parameters, wants_user = schemas.describe(function)
        registered = RegisteredTool(
            name=name or function.__name__,
            description=(description or inspect.getdoc(function) or "").strip(),
            func=function,
            parameters=parameters,
            wants_user=wants_user,
            permission=permission,
            confirm=confirm,
            timeout=timeout,
            is_async=inspect.iscoroutinefunction(function),
        )
        if not registered.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"A tool name is letters, digits, _ and -: {registered.name!r}")
        register_tool(registered)
        return function

    return register(func) if func is not None else register


def register_tool(registered: RegisteredTool) -> None:
    global _synced
    with _lock:
        _tools[registered.name] = registered
        _synced = False  # its row is created on the next use
    disabled.clear()


def unregister(name: str) -> None:
    with _lock:
        _tools.pop(name, None)


def get(name: str) -> RegisteredTool | None:
    return _tools.get(name)


def all_tools() -> list[RegisteredTool]:
    return sorted(_tools.values(), key=lambda t: t.name)


def sync_rows(**kwargs: Any) -> None:
    """A ``Tool`` row per registered tool (new ones enabled); description and flags kept
    current. A ``post_migrate`` receiver, and run on first use."""
    global _synced
    from django.db import transaction

    from ..models import Tool

    registered = all_tools()
    if not registered:
        _synced = True
        return
    with transaction.atomic():
        existing = {
            row.name: row for row in Tool.objects.filter(name__in=[t.name for t in registered])
        }
        for item in registered:
            row = existing.get(item.name)
            if row is None:
                Tool.objects.create(
                    name=item.name, description=item.description, confirm=item.confirm
                )
            elif row.description != item.description or row.confirm != item.confirm:
                Tool.objects.filter(pk=row.pk).update(
                    description=item.description, confirm=item.confirm
                )
    _synced = True
    disabled.clear()


def _disabled_names() -> frozenset[str]:
    from ..models import Tool

    return frozenset(Tool.objects.filter(enabled=False).values_list("name", flat=True))


# The tools admins switched off, kept like the other snapshots (CONFIG_CACHE_SECONDS).
disabled: snapshots.Snapshot[frozenset[str]] = snapshots.Snapshot(_disabled_names)


def forget_disabled(**kwargs: Any) -> None:
    """A Tool row changed in this process: read the switched-off ones again (a receiver)."""
    disabled.clear()


def usable(name: str, user: Any) -> RegisteredTool | None:
    """The tool ``name`` if it is registered, enabled and ``user`` may use it. Sync."""
    item = _tools.get(name)
    if item is None or name in disabled.get() or not item.allowed(user):
        return None
    return item


def offered_to(user: Any) -> list[RegisteredTool]:
    """The tools a chat reply of ``user`` offers the model. Sync (the plan's database trip);
    nothing is read unless the user may use a registered tool (most sends: none)."""
    if not _tools:
        return []
    allowed = [t for t in all_tools() if t.allowed(user)]
    if not allowed:
        return []
    if not _synced:
        sync_rows()
    off = disabled.get()
    return [t for t in allowed if t.name not in off]
