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


@dataclass(frozen=True)
class RegisteredAssistant:
    """An assistant the host defined in code (``assistant()``); its row is kept in step."""

    name: str
    model: str
    system_prompt: str = ""
    temperature: float | None = None
    tools: tuple[str, ...] = ()
    description: str = ""


_assistants: dict[str, RegisteredAssistant] = {}


def assistant(
    name: str,
    *,
    model: str,
    system_prompt: str = "",
    temperature: float | None = None,
    tools: tuple[str, ...] | list[str] = (),
    description: str = "",
) -> RegisteredAssistant:
    """Define an assistant in code (docs/admin.md "Assistants"): a preset users pick in the
    chat like a model — ``model`` (an enabled model id) with this system prompt, temperature and
    only these tools (registered tool names). Its ``Assistant`` row is created or updated after
    ``migrate`` and on first use; admins may switch it off, the code sets the rest again."""
    registered = RegisteredAssistant(
        name=name,
        model=model,
        system_prompt=system_prompt,
        temperature=temperature,
        tools=tuple(tools),
        description=description,
    )
    global _synced
    with _lock:
        _assistants[name] = registered
        _synced = False
    return registered


def unregister_assistant(name: str) -> None:
    with _lock:
        _assistants.pop(name, None)


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
    assistants = sorted(_assistants.values(), key=lambda a: a.name)
    if not registered and not assistants:
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
        if assistants:
            _sync_assistants(assistants)
    _synced = True
    disabled.clear()


def _sync_assistants(assistants: list[RegisteredAssistant]) -> None:
    """The code's assistants as rows (in ``sync_rows``' transaction); ``enabled`` stays the
    admin's."""
    from ..models import Assistant, Tool

    tools = {row.name: row for row in Tool.objects.all()}
    for item in assistants:
        row, _ = Assistant.objects.update_or_create(
            name=item.name,
            defaults={
                "model": item.model,
                "system_prompt": item.system_prompt,
                "temperature": item.temperature,
                "description": item.description,
                "in_code": True,
            },
        )
        row.tools.set([tools[name] for name in item.tools if name in tools])


def ensure_synced() -> None:
    """Sync the rows once per process (the first use after a registration)."""
    if not _synced:
        sync_rows()


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
