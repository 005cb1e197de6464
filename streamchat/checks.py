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
                hint="Point it at your asgi.py application that routes streamchat.routing.websocket_urlpatterns.",
                id="streamchat.E001",
            )
        )
    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    if "default" not in layers:
        messages.append(
            Error(
                "No default channel layer is configured.",
                hint="Set CHANNEL_LAYERS['default']: channels_redis.core.RedisChannelLayer in production, "
                f"{INMEMORY_LAYER} for a single process.",
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
                hint="Add 'daphne' first in INSTALLED_APPS, or serve the site with another ASGI server "
                "(uvicorn) and ignore this with SILENCED_SYSTEM_CHECKS = ['streamchat.W002'].",
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
