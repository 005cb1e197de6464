"""First run: the ``API_KEY`` setting (the demo reads ``OPENROUTER_API_KEY``) becomes an ApiKey.

``seed_on_migrate`` is a ``post_migrate`` receiver (connected in ``StreamchatConfig.ready``). It
stores the key, encrypted, only while the ApiKey table is empty, so admins manage it from then on:
disabling or replacing it in admin sticks. Until it is seeded, ``usable_keys()`` uses the setting
directly, so chat works either way.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import DEFAULT_DB_ALIAS, router

from . import crypto
from .conf import app_settings
from .forms import KEY_SHAPE
from .keys import key_hint

logger = logging.getLogger(__name__)

SEEDED_LABEL = "From OPENROUTER_API_KEY"


def seed_api_key(using: str = DEFAULT_DB_ALIAS) -> Any:
    """Store the ``API_KEY`` setting as an ApiKey if there is none yet; the new row, or None."""
    from .models import ApiKey

    secret = (app_settings.API_KEY or "").strip()
    if not secret or not router.allow_migrate_model(using, ApiKey):
        return None
    if ApiKey.objects.using(using).exists():
        return None
    if not KEY_SHAPE.match(secret):
        logger.warning(
            "API_KEY (%s) does not look like an OpenRouter key; it was not stored.",
            key_hint(secret),
        )
        return None
    key = ApiKey.objects.using(using).create(
        label=SEEDED_LABEL, secret_encrypted=crypto.encrypt(secret), hint=key_hint(secret)
    )
    logger.info("Stored the API_KEY setting (%s) as an API key; manage it in admin.", key.hint)
    return key


def seed_on_migrate(sender: Any = None, using: str = DEFAULT_DB_ALIAS, **kwargs: Any) -> None:
    seed_api_key(using=using)
