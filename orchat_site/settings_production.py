"""The demo's production settings: ``DJANGO_SETTINGS_MODULE=orchat_site.settings_production``.

They pass ``manage.py check --deploy`` without a warning (``tests/test_security_checks.py`` runs
it). Everything of ``settings.py`` applies, plus:

- Required environment: ``SECRET_KEY`` (50+ random characters), ``ALLOWED_HOSTS`` (the site's host
  names, no ``*``), ``STREAMCHAT_ENCRYPTION_KEYS`` (Fernet keys, newest first), ``REDIS_URL``
  (several workers share replies through Redis) and ``DATABASE_URL`` (PostgreSQL). A missing one
  stops the start with ``ImproperlyConfigured`` naming it.
- HTTPS only, behind a TLS-terminating proxy that sets ``X-Forwarded-Proto``: redirects to HTTPS,
  secure cookies, HSTS for a year with subdomains and preload (``SECURE_HSTS_SECONDS`` overrides
  the duration; start lower while trying HTTPS out). Run Daphne with ``--proxy-headers`` so
  websockets see ``wss`` and the browser's address; or list the public origin in
  ``CSRF_TRUSTED_ORIGINS``.
- Static files are not served by Daphne with ``DEBUG`` off: ``collectstatic`` and serve
  ``STATIC_ROOT`` from the proxy (or WhiteNoise).

docs/security.md has the whole deploy checklist.
"""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

from .settings import *  # noqa: F403


def required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ImproperlyConfigured(
            f"Set the {name} environment variable (orchat_site/settings_production.py says why)."
        )
    return value


for _name in ("ALLOWED_HOSTS", "STREAMCHAT_ENCRYPTION_KEYS", "REDIS_URL", "DATABASE_URL"):
    required(_name)

DEBUG = False
SECRET_KEY = required("SECRET_KEY")
# settings.py read ALLOWED_HOSTS, CSRF_TRUSTED_ORIGINS, REDIS_URL (the Redis channel layer),
# DATABASE_URL and STREAMCHAT_ENCRYPTION_KEYS from the same environment.

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", 365 * 24 * 3600))
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
# Django's defaults, stated: no MIME sniffing, no framing, same-origin referrers and openers.
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
# Database connections stay per request (CONN_MAX_AGE = 0, from settings.py): under ASGI, Django
# advises a connection pooler (pgbouncer) rather than persistent connections.
