"""Encryption at rest for OpenRouter API keys: Fernet tokens under a rotating list of keys.

Guarantees:

- Only ciphertext is stored. ``encrypt()`` returns a Fernet token (AES-128-CBC + HMAC-SHA256);
  ``decrypt()`` either returns the exact plaintext or raises ``UnreadableSecret``; it never
  returns garbage for a tampered or foreign token (the HMAC is checked first).
- Keys rotate. ``STREAMCHAT["ENCRYPTION_KEYS"]`` is a list, newest first: the first key encrypts,
  every key decrypts (``MultiFernet``). ``rotate_encryption_keys`` re-encrypts stored secrets
  under the first key, after which the older keys can be removed.
- With no key configured, one is derived from ``SECRET_KEY`` (and decrypt-only ones from
  ``SECRET_KEY_FALLBACKS``). That is for development: a deploy check warns (streamchat.W010),
  because rotating ``SECRET_KEY`` without a fallback would then make every stored secret unreadable.
  The derived keys always decrypt (after the configured ones), so secrets stored under the default
  move to a dedicated key with one run of ``rotate_encryption_keys``.

Nothing here logs, and no exception raised here carries a plaintext or a key. Every plaintext
that passes through here (all of them are API keys) is remembered by ``streamchat.scrub``, so any
text that echoes one can be masked in this process; the functions holding a plaintext are
``sensitive_variables`` (error pages and mails show stars).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.crypto import salted_hmac
from django.views.decorators.debug import sensitive_variables

from . import scrub
from .conf import app_settings

# Salt for the SECRET_KEY-derived development key: a different salt gives an unrelated key, so
# the derived key is useless for anything else Django signs with SECRET_KEY, and vice versa.
DERIVATION_SALT = "streamchat.crypto.fernet-key"


UNREADABLE_MESSAGE = "The stored secret cannot be decrypted with the configured encryption keys."


class UnreadableSecret(Exception):
    """A stored value that none of the configured keys can decrypt (wrong key, or tampered)."""


class InvalidEncryptionKey(ValueError):
    """``ENCRYPTION_KEYS`` holds a value that is not a Fernet key (the message says which)."""


def derive_key(secret_key: str) -> bytes:
    """A Fernet key (urlsafe base64 of 32 bytes) derived from a Django ``SECRET_KEY``."""
    digest = salted_hmac(DERIVATION_SALT, "fernet", secret=secret_key, algorithm="sha256").digest()
    return base64.urlsafe_b64encode(digest)


def generate_key() -> str:
    """A fresh random key to put first in ``ENCRYPTION_KEYS``."""
    return Fernet.generate_key().decode("ascii")


def key_problems(keys: object) -> list[str]:
    """What is wrong with an ``ENCRYPTION_KEYS`` value, one sentence each; empty when it is usable.

    The messages name positions, never the keys themselves (they end up in check output and logs).
    """
    if isinstance(keys, str | bytes) or not isinstance(keys, Sequence):
        return ["ENCRYPTION_KEYS must be a list of keys (newest first), not a single string."]
    problems = []
    for position, key in enumerate(keys):
        if not isinstance(key, str | bytes):
            problems.append(f"ENCRYPTION_KEYS[{position}] is not a string.")
            continue
        try:
            Fernet(key)
        except (ValueError, binascii.Error):
            problems.append(
                f"ENCRYPTION_KEYS[{position}] is not a Fernet key "
                "(32 bytes, urlsafe base64: 44 characters ending in '=')."
            )
    return problems


def configured_keys() -> tuple[bytes, ...]:
    """The keys in use, newest first: ``ENCRYPTION_KEYS``, then those derived from ``SECRET_KEY``.

    The derived keys stay last, for decrypting only, so moving from the development default to a
    dedicated key is: set ``ENCRYPTION_KEYS``, run ``rotate_encryption_keys``.
    """
    keys = app_settings.ENCRYPTION_KEYS
    derived = tuple(derive_key(secret) for secret in _secret_keys())
    if not keys:
        return derived
    problems = key_problems(keys)
    if problems:
        raise InvalidEncryptionKey(" ".join(problems))
    return (*(k.encode("ascii") if isinstance(k, str) else k for k in keys), *derived)


def _secret_keys() -> list[str]:
    try:
        current = settings.SECRET_KEY
    except ImproperlyConfigured:  # Django refuses an empty SECRET_KEY when it is read
        current = ""
    return [s for s in [current, *getattr(settings, "SECRET_KEY_FALLBACKS", ())] if s]


def uses_derived_key() -> bool:
    return not app_settings.ENCRYPTION_KEYS


@lru_cache(maxsize=8)
def _fernet(keys: tuple[bytes, ...]) -> MultiFernet:
    # Keyed by the key tuple itself, so a settings change (tests, rotation) is picked up at once
    # without a signal, and building Fernet objects stays off the per-request path.
    return MultiFernet([Fernet(k) for k in keys])


def fernet() -> MultiFernet:
    keys = configured_keys()
    if not keys:
        raise InvalidEncryptionKey(
            "No encryption key: set STREAMCHAT['ENCRYPTION_KEYS'] or SECRET_KEY."
        )
    return _fernet(keys)


@sensitive_variables("plaintext")
def encrypt(plaintext: str) -> str:
    """A Fernet token (ASCII) for ``plaintext``, under the newest key."""
    scrub.remember(plaintext)
    return fernet().encrypt(plaintext.encode("utf-8")).decode("ascii")


@sensitive_variables("plaintext")
def decrypt(token: str) -> str:
    """The plaintext of ``token``, or ``UnreadableSecret`` if no configured key opens it."""
    try:
        plaintext = fernet().decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError, ValueError, TypeError):
        # "from None": the cause would only say "InvalidToken", and chained tracebacks of
        # secrets code are better kept short.
        raise UnreadableSecret(UNREADABLE_MESSAGE) from None
    scrub.remember(plaintext)
    return plaintext


def is_current(token: str) -> bool:
    """Whether ``token`` is already encrypted under the newest key (rotation has nothing to do)."""
    try:
        _fernet(configured_keys()[:1]).decrypt(token.encode("ascii"))
    except (InvalidToken, UnicodeError, ValueError, TypeError):
        return False
    return True


def rotate(token: str) -> str:
    """``token`` re-encrypted under the newest key (``UnreadableSecret`` if no key opens it)."""
    try:
        return fernet().rotate(token.encode("ascii")).decode("ascii")
    except (InvalidToken, UnicodeError, ValueError, TypeError):
        raise UnreadableSecret(UNREADABLE_MESSAGE) from None
