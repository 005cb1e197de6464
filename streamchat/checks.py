"""System checks: ``streamchat.E…`` errors stop the site, ``streamchat.W…`` warnings are advice.

Every id is listed in README.md (the suite checks that) with what to do about it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from .conf import unknown_keys

INMEMORY_LAYER = "channels.layers.InMemoryChannelLayer"


@register(Tags.compatibility)
def check_asgi_setup(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    apps = list(settings.INSTALLED_APPS)
    if not getattr(settings, "ASGI_APPLICATION", None):
        messages.append(
            Error(
                "ASGI_APPLICATION is not set.",
                hint="Point it at your asgi.py application that routes "
                "streamchat.routing.websocket_urlpatterns.",
                id="streamchat.E001",
            )
        )
    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    if "default" not in layers:
        messages.append(
            Error(
                "No default channel layer is configured.",
                hint="Set CHANNEL_LAYERS['default']: channels_redis.core.RedisChannelLayer in "
                f"production, {INMEMORY_LAYER} for a single process.",
                id="streamchat.E002",
            )
        )
    if "channels" not in apps and not any(a.startswith("channels.") for a in apps):
        messages.append(
            Error(
                "'channels' is not in INSTALLED_APPS.",
                hint="Add 'channels' to INSTALLED_APPS.",
                id="streamchat.E003",
            )
        )
    if "daphne" not in apps:
        messages.append(
            Warning(
                "'daphne' is not in INSTALLED_APPS, so runserver serves no websockets.",
                hint="Add 'daphne' first in INSTALLED_APPS, or serve the site with another ASGI "
                "server (uvicorn) and ignore this with SILENCED_SYSTEM_CHECKS = "
                "['streamchat.W002'].",
                id="streamchat.W002",
            )
        )
    if unknown_keys():
        messages.append(
            Error(
                f"Unknown STREAMCHAT settings: {', '.join(unknown_keys())}.",
                hint="See README.md for the settings streamchat reads; check the spelling.",
                id="streamchat.E004",
            )
        )
    return messages


@register(Tags.compatibility, deploy=True)
def check_production_layer(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    layer = (getattr(settings, "CHANNEL_LAYERS", None) or {}).get("default", {})
    if not settings.DEBUG and layer.get("BACKEND") == INMEMORY_LAYER:
        return [
            Warning(
                "The in-memory channel layer is used with DEBUG off.",
                hint="With more than one worker process, replies cannot be followed from another "
                "worker. Use channels_redis.core.RedisChannelLayer (set REDIS_URL in the demo).",
                id="streamchat.W001",
            )
        ]
    return []


@register(Tags.security)
def check_encryption_keys(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """API keys are stored encrypted: the key list must be usable (streamchat.crypto)."""
    from django.core.exceptions import ImproperlyConfigured

    from .conf import app_settings
    from .crypto import key_problems

    keys = app_settings.ENCRYPTION_KEYS
    if keys:
        return [
            Error(
                problem,
                hint='Generate a key with: python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())" and list keys newest first.',
                id="streamchat.E010",
            )
            for problem in key_problems(keys)
        ]
    try:
        secret_key = settings.SECRET_KEY
    except ImproperlyConfigured:
        secret_key = ""
    if not secret_key:
        return [
            Error(
                "No encryption key for API keys: STREAMCHAT['ENCRYPTION_KEYS'] is empty and so is "
                "SECRET_KEY.",
                hint="Set STREAMCHAT['ENCRYPTION_KEYS'] to a list of Fernet keys, newest first.",
                id="streamchat.E011",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_encryption_key_is_dedicated(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from .conf import app_settings

    if not app_settings.ENCRYPTION_KEYS:
        return [
            Warning(
                "API keys are encrypted with a key derived from SECRET_KEY.",
                hint="Set STREAMCHAT['ENCRYPTION_KEYS'] to a dedicated Fernet key (the demo reads "
                "STREAMCHAT_ENCRYPTION_KEYS), then run manage.py rotate_encryption_keys. Until "
                "then, changing SECRET_KEY without SECRET_KEY_FALLBACKS makes every stored API key "
                "unreadable.",
                id="streamchat.W010",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_allowed_hosts_wildcard(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The websocket origin check trusts the ``Host`` a socket names when ``ALLOWED_HOSTS`` allows
    it: with ``"*"``, any host name pointed at the server (DNS rebinding) is the site's own."""
    if "*" in settings.ALLOWED_HOSTS:
        return [
            Warning(
                "ALLOWED_HOSTS contains '*': websocket handshakes from any host name that reaches "
                "this server pass the same-origin check as the site's own.",
                hint="List the site's host names in ALLOWED_HOSTS (the demo reads ALLOWED_HOSTS).",
                id="streamchat.W011",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_limits_fail_closed(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from .conf import app_settings

    if app_settings.LIMITS_FAIL_OPEN and not settings.DEBUG:
        return [
            Warning(
                "LIMITS_FAIL_OPEN is on with DEBUG off: when the limit store cannot be read, "
                "sends are admitted without any rate limit or budget.",
                hint="Leave STREAMCHAT['LIMITS_FAIL_OPEN'] off in production (sends are then "
                "refused with limits_unavailable until the database answers again).",
                id="streamchat.W020",
            )
        ]
    return []
