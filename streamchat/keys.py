"""Which OpenRouter API keys a reply may use, in failover order, and what happened to them.

Keys are ``ApiKey`` rows managed in admin, their secrets encrypted at rest (``streamchat.crypto``).
``usable_keys()`` returns the active rows that decrypt, by priority; the ``API_KEY`` setting comes
last, and only when no row is usable and admin has not switched that same key off. A row that
cannot be decrypted (wrong encryption key, tampered ciphertext) is skipped, and the reason is
recorded on it so admin shows it as failing: chat falls over to the next key instead of failing.

Secrets live only in ``KeyChoice.secret``; its ``repr`` and everything recorded here leave them out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from channels.db import database_sync_to_async
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from . import crypto, scrub
from .conf import app_settings

if TYPE_CHECKING:
    from .models import ApiKey

# Models are imported inside the functions: the reply engine imports this module early, and
# importing models at module level here would tie that import to the app registry being ready.

logger = logging.getLogger(__name__)

# Longest error text kept on a key (upstream messages can be long; admin shows it in a list).
MAX_ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class KeyChoice:
    """A usable key: ``id`` is the ApiKey's pk, or None for the ``API_KEY`` setting."""

    id: int | None
    secret: str = ""
    hint: str = ""

    def __post_init__(self) -> None:
        # Every key in clear is one the scrubber must know, wherever it was decrypted or passed.
        scrub.remember(self.secret)

    def __repr__(self) -> str:  # never show the secret
        return f"KeyChoice(id={self.id}, hint={self.hint!r})"


def key_hint(secret: str) -> str:
    """``sk-or-v1-…a1b2``: the key's public prefix and its last four characters, nothing more."""
    return scrub.hint(secret)


@sensitive_variables("secret", "fallback")
def usable_keys() -> list[KeyChoice]:
    """Active, readable keys by priority, then the ``API_KEY`` setting when no row is usable."""
    from .models import ApiKey

    keys: list[KeyChoice] = []
    for row in ApiKey.objects.filter(is_active=True).order_by("priority", "id"):
        try:
            secret = crypto.decrypt(row.secret_encrypted)
        except crypto.UnreadableSecret:
            _note_unreadable(row)
            continue
        keys.append(KeyChoice(id=row.pk, secret=secret, hint=row.hint))
    fallback = app_settings.API_KEY
    if not keys and fallback and not _switched_off_in_admin(fallback):
        keys.append(KeyChoice(id=None, secret=fallback, hint=key_hint(fallback)))
    return keys


async def ausable_keys() -> list[KeyChoice]:
    return await database_sync_to_async(usable_keys)()


def record_key_failure(key: KeyChoice, message: str) -> None:
    """Mark a key failing (401, 402): admins see the message and when it happened."""
    if key.id is None:
        logger.warning(
            "The API_KEY setting (%s) failed: %s", key.hint, scrub.scrub(message, [key.secret])
        )
        return
    from .models import ApiKey

    ApiKey.objects.filter(pk=key.id).update(
        last_error=scrub.scrub(message, [key.secret])[:MAX_ERROR_CHARS],
        last_error_at=timezone.now(),
    )


async def arecord_key_failure(key: KeyChoice, message: str) -> None:
    await database_sync_to_async(record_key_failure)(key, message)


def record_key_used(key: KeyChoice) -> None:
    """Note that a key answered a request."""
    if key.id is None:
        return
    from .models import ApiKey

    ApiKey.objects.filter(pk=key.id).update(last_used=timezone.now())


async def arecord_key_used(key: KeyChoice) -> None:
    await database_sync_to_async(record_key_used)(key)


def _note_unreadable(row: ApiKey) -> None:
    from .models import ApiKey

    # Written once, not on every reply: the UPDATE only matches while the message differs.
    updated = (
        ApiKey.objects.filter(pk=row.pk)
        .exclude(last_error=crypto.UNREADABLE_MESSAGE)
        .update(last_error=crypto.UNREADABLE_MESSAGE, last_error_at=timezone.now())
    )
    if updated:
        logger.error(
            "API key %r (%s) was skipped: %s", row.label, row.hint, crypto.UNREADABLE_MESSAGE
        )


@sensitive_variables("secret")
def _switched_off_in_admin(secret: str) -> bool:
    """Whether ``secret`` is stored in admin as a disabled key: switched off means off, even
    when the same key also sits in the environment (e.g. the key seeded from it)."""
    from .models import ApiKey

    for token in ApiKey.objects.filter(is_active=False, hint=key_hint(secret)).values_list(
        "secret_encrypted", flat=True
    ):
        try:
            if crypto.decrypt(token) == secret:
                return True
        except crypto.UnreadableSecret:
            continue
    return False


NO_KEY_MESSAGE = "No OpenRouter API key is configured: add one in the admin."
UNREADABLE_KEYS_MESSAGE = (
    "The stored OpenRouter API keys cannot be decrypted: check the ENCRYPTION_KEYS setting (the "
    "key they were encrypted with must be listed)."
)


@sensitive_variables("plaintext")
def no_key_message() -> str:
    """Why no key is usable, for the error a send gets: none configured, or every active key
    unreadable (SEC-05: a wrong or missing encryption key), which is a different fix."""
    from .models import ApiKey

    tokens = list(ApiKey.objects.filter(is_active=True).values_list("secret_encrypted", flat=True))
    for token in tokens:
        try:
            plaintext = crypto.decrypt(token)
        except crypto.UnreadableSecret:
            continue
        del plaintext  # a readable key: the snapshot that found none is stale
        return NO_KEY_MESSAGE
    return UNREADABLE_KEYS_MESSAGE if tokens else NO_KEY_MESSAGE


async def ano_key_message() -> str:
    message: str = await database_sync_to_async(no_key_message)()
    return message
