"""Which OpenRouter API keys a reply may use, in failover order, and what happened to them.

(Interim: only the STREAMCHAT["API_KEY"] fallback. The admin issue adds encrypted ApiKey rows.)
"""

from __future__ import annotations

from dataclasses import dataclass

from asgiref.sync import sync_to_async

from .conf import app_settings


@dataclass(frozen=True, slots=True)
class KeyChoice:
    """A usable key: ``id`` is the ApiKey's pk, or None for the ``API_KEY`` setting."""

    id: int | None
    secret: str = ""
    hint: str = ""

    def __repr__(self) -> str:  # never show the secret
        return f"KeyChoice(id={self.id}, hint={self.hint!r})"


def usable_keys() -> list[KeyChoice]:
    """Active, readable keys by priority, then the ``API_KEY`` setting."""
    keys: list[KeyChoice] = []
    if app_settings.API_KEY:
        secret = app_settings.API_KEY
        keys.append(KeyChoice(id=None, secret=secret, hint=f"{secret[:8]}…{secret[-4:]}"))
    return keys


async def ausable_keys() -> list[KeyChoice]:
    return await sync_to_async(usable_keys, thread_sensitive=True)()


def record_key_failure(key: KeyChoice, message: str) -> None:
    """Mark a key failing (401, 402): admins see the message and when it happened."""


async def arecord_key_failure(key: KeyChoice, message: str) -> None:
    await sync_to_async(record_key_failure, thread_sensitive=True)(key, message)


def record_key_used(key: KeyChoice) -> None:
    """Note that a key answered a request."""


async def arecord_key_used(key: KeyChoice) -> None:
    await sync_to_async(record_key_used, thread_sensitive=True)(key)
