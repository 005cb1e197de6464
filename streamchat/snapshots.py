"""What every send reads and admins rarely change, kept briefly in each process.

Every send needs the enabled models, the usable API keys and the rate-limit rules. Reading and
decrypting them for each send costs more than the rest of admission, so the engine keeps what it
read for ``CONFIG_CACHE_SECONDS``. A change saved in this process (admin, shell, a command) clears
the copy at once (model signals; bulk updates call ``clear_all()``); other workers see it within
``CONFIG_CACHE_SECONDS``. ``0`` reads them for every send. Nothing else is kept: conversations,
messages, usage and the limits' counters are always read from the database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .conf import app_settings

T = TypeVar("T")


class Snapshot(Generic[T]):
    """``load()``'s value, reloaded once it is older than ``CONFIG_CACHE_SECONDS``."""

    def __init__(self, load: Callable[[], T]) -> None:
        self._load = load
        self._value: T | None = None
        self._loaded_at = 0.0
        self._generation = 0
        self._lock = threading.Lock()

    def get(self) -> T:
        seconds = float(app_settings.CONFIG_CACHE_SECONDS or 0)
        if seconds <= 0:
            return self._load()
        now = time.monotonic()
        if self._value is not None and now - self._loaded_at < seconds:
            return self._value
        generation = self._generation
        value = self._load()
        with self._lock:
            if generation == self._generation:  # not cleared while we read: keep it
                self._value, self._loaded_at = value, now
        return value

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._value = None


def _enabled_models() -> list[Any]:
    from .models import ChatModel

    return list(ChatModel.objects.filter(enabled=True))  # ordered: the default first


def _usable_keys() -> list[Any]:
    from .keys import usable_keys

    return usable_keys()


def _limit_rules() -> dict[str, Any]:
    from .models import RateLimit

    rules: dict[str, Any] = {"user": {}, "group": {}, "default": None}
    for row in RateLimit.objects.all():
        if row.scope == RateLimit.Scope.USER:
            rules["user"][row.user_id] = row
        elif row.scope == RateLimit.Scope.GROUP:
            rules["group"][row.group_id] = row
        else:
            rules["default"] = row
    return rules


def _enabled_assistants() -> dict[int, Any]:
    from .streaming.store import AssistantChoice
    from .tools import registry

    registry.ensure_synced()  # the host's assistants defined in code have their rows
    from .models import Assistant

    rows = Assistant.objects.filter(enabled=True).prefetch_related("tools")
    return {row.pk: AssistantChoice.of(row) for row in rows}


enabled_models: Snapshot[list[Any]] = Snapshot(_enabled_models)
usable_keys: Snapshot[list[Any]] = Snapshot(_usable_keys)
limit_rules: Snapshot[dict[str, Any]] = Snapshot(_limit_rules)
# The assistants users may pick, by id (the model snapshot's companion: read in the same trip).
enabled_assistants: Snapshot[dict[int, Any]] = Snapshot(_enabled_assistants)


def clear_all(**kwargs: Any) -> None:
    """Forget every snapshot (a signal receiver, too)."""
    for snapshot in (enabled_models, usable_keys, limit_rules, enabled_assistants):
        snapshot.clear()


def connect_signals() -> None:
    """Clear the snapshots when their rows change in this process (``AppConfig.ready``)."""
    from django.contrib.auth import get_user_model
    from django.core.signals import setting_changed
    from django.db.models.signals import m2m_changed, post_delete, post_save

    from .models import ApiKey, Assistant, ChatModel, RateLimit

    for model in (ChatModel, ApiKey, RateLimit, Assistant):
        post_save.connect(clear_all, sender=model, dispatch_uid=f"streamchat-snap-{model.__name__}")
        post_delete.connect(
            clear_all, sender=model, dispatch_uid=f"streamchat-snap-del-{model.__name__}"
        )
    m2m_changed.connect(
        clear_all, sender=Assistant.tools.through, dispatch_uid="streamchat-snap-assistant-tools"
    )
    groups = getattr(get_user_model(), "groups", None)
    if groups is not None:
        m2m_changed.connect(clear_all, sender=groups.through, dispatch_uid="streamchat-snap-groups")
    setting_changed.connect(clear_all, dispatch_uid="streamchat-snap-settings")
