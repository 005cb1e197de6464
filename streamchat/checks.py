"""System checks: ``streamchat.E…`` errors stop the site, ``streamchat.W…`` warnings are advice.

Every id is listed in README.md (the suite checks that) with what to do about it.
"""

from __future__ import annotations

import itertools
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


@register(Tags.security, deploy=True)
def check_allowed_hosts_subdomains(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``.example.com`` in ``ALLOWED_HOSTS`` makes every subdomain the site's own origin for a
    websocket handshake: a page on any of them (a user's, a forgotten one) can open the chat."""
    patterns = [host for host in settings.ALLOWED_HOSTS if host.startswith(".")]
    if patterns:
        return [
            Warning(
                f"ALLOWED_HOSTS allows every subdomain of {', '.join(patterns)}: a page served "
                "from any of them passes the websocket origin check with a logged-in user's "
                "session.",
                hint="List the site's exact host names in ALLOWED_HOSTS, unless every subdomain "
                "is as trusted as the site itself.",
                id="streamchat.W012",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_session_cookie_samesite(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """A websocket handshake carries no CSRF token: with ``SameSite=None`` the session cookie
    rides a handshake that another site starts, and the origin check is the only guard left."""
    samesite = getattr(settings, "SESSION_COOKIE_SAMESITE", "Lax")
    if isinstance(samesite, str) and samesite.lower() == "none":
        return [
            Warning(
                "SESSION_COOKIE_SAMESITE is 'None': the session cookie is sent with websocket "
                "handshakes that other sites start, and a websocket has no CSRF token.",
                hint="Use 'Lax' (Django's default) or 'Strict'.",
                id="streamchat.W013",
            )
        ]
    return []


@register(Tags.async_support)
def check_persistent_connections(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Django's persistent connections are per thread and are not closed at the end of an async
    request: under ASGI they pile up (Django's docs say to disable them in async mode)."""
    if not getattr(settings, "ASGI_APPLICATION", None):
        return []
    aliases = []
    for alias, database in settings.DATABASES.items():
        max_age = database.get("CONN_MAX_AGE", 0)
        if max_age is None or max_age > 0:  # None: connections are kept forever
            aliases.append(alias)
    if aliases:
        return [
            Warning(
                f"CONN_MAX_AGE is not 0 for database {', '.join(sorted(aliases))} under ASGI: "
                "persistent connections are per thread, so async requests leave connections "
                "open that nothing reuses or closes.",
                hint="Set CONN_MAX_AGE = 0 and use a connection pool instead (PostgreSQL: "
                "OPTIONS {'pool': True}, or pgbouncer). streamchat's engine keeps its own "
                "connections whatever CONN_MAX_AGE says.",
                id="streamchat.W014",
            )
        ]
    return []


@register(Tags.staticfiles, deploy=True)
def check_js_module_imports_hashed(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The chat page's ES modules import each other by relative paths: a storage that hashes file
    names must rewrite those too, or a hashed module loads unhashed (cacheable, stale) siblings."""
    from django.contrib.staticfiles.storage import HashedFilesMixin
    from django.core.files.storage import storages

    try:
        storage = storages["staticfiles"]
    except Exception:  # a misconfigured storage: Django's own checks and collectstatic say so
        return []
    if isinstance(storage, HashedFilesMixin) and not storage.support_js_module_import_aggregation:
        return [
            Warning(
                f"{type(storage).__name__} hashes static file names but not the imports of "
                "JavaScript modules: the chat page's hashed main.js would load unhashed modules, "
                "which caches may keep across a deploy.",
                hint="Use streamchat.storage.ManifestStaticFilesStorage as "
                'STORAGES["staticfiles"]["BACKEND"], or set '
                "support_js_module_import_aggregation = True on your storage class.",
                id="streamchat.W030",
            )
        ]
    return []


# What guards the websocket route: streamchat's validator compares whole origins; Channels' stock
# one compares host names only (any port, any scheme, "http://host:8000.evil.example").
SAME_ORIGIN, STOCK, NONE = "same-origin", "stock", "none"
_CHILD_ATTRIBUTES = ("inner", "application", "app")
_MAX_DEPTH = 50


def _guards(app: Any, guard: str, seen: set[int], depth: int = 0) -> list[tuple[bool, str]]:
    """``(reaches streamchat's consumer, strongest guard in front)`` for each leaf under ``app``."""
    from channels.routing import ProtocolTypeRouter, URLRouter
    from channels.security.websocket import OriginValidator

    from .consumers import ChatConsumer
    from .origin import SameOriginValidator

    if id(app) in seen or depth > _MAX_DEPTH:
        return []
    seen = seen | {id(app)}
    if isinstance(app, SameOriginValidator):
        guard = SAME_ORIGIN
    elif isinstance(app, OriginValidator) and guard != SAME_ORIGIN:
        guard = STOCK
    consumer = getattr(app, "consumer_class", None)
    if isinstance(consumer, type):
        return [(issubclass(consumer, ChatConsumer), guard)]
    if isinstance(app, ProtocolTypeRouter):
        websocket = app.application_mapping.get("websocket")
        return [] if websocket is None else _guards(websocket, guard, seen, depth + 1)
    if isinstance(app, URLRouter):
        children = [getattr(route, "callback", None) for route in app.routes]
    else:
        children = [getattr(app, name, None) for name in _CHILD_ATTRIBUTES]
    leaves = [
        leaf
        for child in children
        if child is not None
        for leaf in _guards(child, guard, seen, depth + 1)
    ]
    return leaves or [(False, guard)]


def websocket_guard(application: Any) -> str | None:
    """The weakest origin guard in front of streamchat's websocket consumer in ``application``
    (``"same-origin"``, ``"stock"`` or ``"none"``), or None when it serves no websockets.

    Walks ``ProtocolTypeRouter``, ``URLRouter`` and middleware chains (``.inner``,
    ``.application``, ``.app``). When the consumer is not found (an app of the host's own), the
    weakest guard on any websocket path counts."""
    leaves = _guards(application, NONE, set())
    if not leaves:
        return None
    ours = [guard for reaches, guard in leaves if reaches] or [guard for _, guard in leaves]
    order = [NONE, STOCK, SAME_ORIGIN]
    return min(ours, key=order.index)


@register(Tags.security, deploy=True)
def check_websocket_origin_validator(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Without an origin check, any site a logged-in user visits can open the chat websocket with
    their session cookie (cross-site websocket hijacking)."""
    from django.utils.module_loading import import_string

    path = getattr(settings, "ASGI_APPLICATION", None)
    if not path:
        return []  # E001 says so
    try:
        application = import_string(path)
        guard = websocket_guard(application)
    except Exception as error:  # a check never crashes: the host's asgi module may fail anyhow
        return [
            Warning(
                f"ASGI_APPLICATION {path!r} could not be imported or inspected "
                f"({type(error).__name__}), so its websocket origin check was not verified.",
                hint="Make the module importable after Django is set up (call "
                "get_asgi_application() before importing anything that imports models).",
                id="streamchat.W017",
            )
        ]
    if guard == NONE:
        return [
            Warning(
                f"The websocket route of {path} has no origin validator: any site a logged-in "
                "user visits can open the chat websocket with their session.",
                hint="Wrap the websocket stack in streamchat.origin.SameOriginValidator, e.g. "
                "SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))).",
                id="streamchat.W015",
            )
        ]
    if guard == STOCK:
        return [
            Warning(
                f"The websocket route of {path} is guarded by Channels' OriginValidator / "
                "AllowedHostsOriginValidator only, which compares host names: another port, "
                "another scheme or 'http://host:8000.evil.example' passes.",
                hint="Use streamchat.origin.SameOriginValidator instead: it compares the whole "
                "origin (scheme, host and port).",
                id="streamchat.W016",
            )
        ]
    return []


# The first releases with the header-injection fixes: Daphne 4.2.2 (CVE-2026-44546, headers
# injected into the ASGI scope through byte sequences Twisted splits on; the same release fixed
# CVE-2026-44545, websocket frames of unbounded size); uvicorn 0.11.7 (CVE-2020-7695, CRLF in
# response headers; CVE-2020-7694, log injection).
ASGI_SERVER_FIXES = {
    "daphne": ((4, 2, 2), "streamchat.W018", "CVE-2026-44546 and CVE-2026-44545"),
    "uvicorn": ((0, 11, 7), "streamchat.W019", "CVE-2020-7695 and CVE-2020-7694"),
}


def _release(version: str) -> tuple[int, ...]:
    numbers = []
    for part in version.split("."):
        digits = "".join(itertools.takewhile(str.isdigit, part))
        if not digits:
            break
        numbers.append(int(digits))
        if digits != part:  # "4.2.2rc1": a pre-release of 4.2.2 is older than 4.2.2
            numbers[-1] -= 1
            break
    return tuple(numbers)


@register(Tags.security, deploy=True)
def check_asgi_server_versions(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Installed ASGI servers older than the release that fixed their header injection."""
    from importlib.metadata import PackageNotFoundError, version

    messages: list[CheckMessage] = []
    for package, (fixed, check_id, cves) in ASGI_SERVER_FIXES.items():
        try:
            installed = version(package)
        except PackageNotFoundError:
            continue
        if _release(installed) < fixed:
            release = ".".join(map(str, fixed))
            messages.append(
                Warning(
                    f"{package} {installed} is installed; {release} fixed header injection "
                    f"({cves}).",
                    hint=f"Upgrade: pip install '{package}>={release}'.",
                    id=check_id,
                )
            )
    return messages


@register(Tags.security, deploy=True)
def check_encryption_key_is_not_secret_key(
    app_configs: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """An ``ENCRYPTION_KEYS`` entry that is ``SECRET_KEY`` (or a fallback), or the key streamchat
    derives from it, is no dedicated key: whoever has ``SECRET_KEY`` reads every stored API key,
    and rotating ``SECRET_KEY`` is no longer independent of the keys."""
    from .conf import app_settings
    from .crypto import derive_key

    keys = app_settings.ENCRYPTION_KEYS
    if not keys or isinstance(keys, str | bytes):
        return []  # W010 / E010
    secrets = [getattr(settings, "SECRET_KEY", "")]
    secrets += list(getattr(settings, "SECRET_KEY_FALLBACKS", []))
    forbidden = set()
    for secret in filter(None, secrets):
        forbidden |= {str(secret), derive_key(str(secret)).decode("ascii")}
    positions = [
        str(position)
        for position, key in enumerate(keys)
        if (key.decode("ascii", "replace") if isinstance(key, bytes) else str(key)) in forbidden
    ]
    if positions:
        return [
            Error(
                f"ENCRYPTION_KEYS[{', '.join(positions)}] is SECRET_KEY (or a fallback), or the "
                "key derived from it: it is not a dedicated encryption key.",
                hint='Generate a key with: python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())", put it first in ENCRYPTION_KEYS, run '
                "manage.py rotate_encryption_keys, then remove the old entry.",
                id="streamchat.E012",
            )
        ]
    return []
