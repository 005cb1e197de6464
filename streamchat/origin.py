"""Same-origin check for websocket handshakes (cross-site websocket hijacking).

Channels' ``AllowedHostsOriginValidator`` compares host names only: it accepts any port, any scheme
and ``http://host:8000.evil.example``. ``SameOriginValidator`` compares the whole origin (scheme,
host and port) with the site's own origin for this connection (the scheme and ``Host`` the socket
was opened with, when that host is in ``ALLOWED_HOSTS``) and with ``CSRF_TRUSTED_ORIGINS``. A
missing, ``null``, malformed or foreign Origin is refused before any app code runs: HTTP 403.

Behind a TLS-terminating proxy, run Daphne with ``--proxy-headers`` (uvicorn:
``--proxy-headers --forwarded-allow-ips``) so the connection's scheme is the browser's, or list the
public origin in ``CSRF_TRUSTED_ORIGINS``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import OriginValidator, WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]


def parse_origin(value: str | None) -> Origin | None:
    """``(scheme, host, port)`` of a serialized origin, or None if it is not one."""
    if not value or value == "null":
        return None
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:  # e.g. "http://host:8000.evil.example"
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    if (
        parts.username
        or parts.password
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        return None
    return parts.scheme, parts.hostname.lower(), port or DEFAULT_PORTS[parts.scheme]


def own_origin(host_header: str | None, scheme: str) -> Origin | None:
    """The site's origin for a socket opened to ``host_header`` over ``scheme`` (ws/wss)."""
    if not host_header:
        return None
    host, port = split_domain_port(host_header)
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    if not host or not validate_host(host, allowed):
        return None
    http_scheme = "https" if scheme in ("wss", "https") else "http"
    host = host.strip("[]") if host.startswith("[") else host
    return http_scheme, host.lower(), int(port) if port else DEFAULT_PORTS[http_scheme]


def trusted(origin: Origin) -> bool:
    """Is ``origin`` one of ``CSRF_TRUSTED_ORIGINS`` (``https://*.example.com``: its subdomains)?"""
    scheme, host, port = origin
    for entry in getattr(settings, "CSRF_TRUSTED_ORIGINS", []):
        wildcard = "://*." in entry
        pattern = parse_origin(entry.replace("://*.", "://", 1))
        if pattern is None or (pattern[0], pattern[2]) != (scheme, port):
            continue
        if host == pattern[1] if not wildcard else host.endswith("." + pattern[1]):
            return True
    return False


def origin_allowed(origin_header: str | None, host_header: str | None, scheme: str) -> bool:
    origin = parse_origin(origin_header)
    if origin is None:
        return False
    return origin == own_origin(host_header, scheme) or trusted(origin)


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    values = [value for key, value in scope.get("headers", []) if key == name]
    if len(values) != 1:  # missing, or repeated to confuse
        return None
    try:
        return values[0].decode("latin1")
    except UnicodeDecodeError:
        return None


class SameOriginValidator(OriginValidator):
    """ASGI middleware: websocket handshakes from another origin get HTTP 403."""

    def __init__(self, application: Any) -> None:
        super().__init__(application, allowed_origins=[])

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            raise ValueError("SameOriginValidator only guards websocket connections")
        if origin_allowed(
            _header(scope, b"origin"), _header(scope, b"host"), scope.get("scheme", "ws")
        ):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)
