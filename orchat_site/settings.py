"""Settings for the streamchat demo site, read from the environment with safe defaults.

Environment: DATABASE_URL (SQLite file by default), REDIS_URL (unset: in-memory channel layer),
OPENROUTER_API_KEY, OPENROUTER_BASE_URL, SECRET_KEY, DEBUG, ALLOWED_HOSTS,
STREAMCHAT_ENCRYPTION_KEYS.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", True)
# A fixed development key; a real deployment sets SECRET_KEY (check --deploy says so).
SECRET_KEY = os.environ.get("SECRET_KEY") or "django-insecure-streamchat-demo-only-change-me"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "streamchat",
    "orchat_site",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The user's Accept-Language picks the language (after sessions, before CommonMiddleware).
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "orchat_site.urls"
ASGI_APPLICATION = "orchat_site.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}", conn_max_age=0
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Websocket replies write from worker threads while requests read: wait for the lock
    # instead of failing with "database is locked". WAL lets readers go on while a reply
    # writes, and with synchronous=NORMAL a commit does not wait for the disk (a commit that
    # fsyncs costs 10-20 ms here: every reply's first token would wait for it).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        timeout=20, init_command="PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    )

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 closes sockets idle for 5 s by default, which tears down idle
                # consumers' BLPOPs (channels_redis issue 422): no socket timeout here.
                "hosts": [
                    {"address": REDIS_URL, "socket_timeout": None, "socket_connect_timeout": 5}
                ],
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
# The languages streamchat ships (a browser asking for another gets LANGUAGE_CODE).
LANGUAGES = [("en", "English"), ("de", "Deutsch"), ("fr", "Français")]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Chat attachments (images, PDFs) go to the default storage; streamchat serves them itself, to
# their owner only, so MEDIA_ROOT is never published by the web server (no MEDIA_URL route).
MEDIA_ROOT = BASE_DIR / "var" / "media"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "streamchat:chat"  # a demo login lands on the chat
LOGOUT_REDIRECT_URL = "login"

STREAMCHAT = {
    "BASE_URL": os.environ.get("OPENROUTER_BASE_URL") or "https://openrouter.ai/api/v1",
    "API_KEY": os.environ.get("OPENROUTER_API_KEY") or None,
    "APP_URL": os.environ.get("STREAMCHAT_APP_URL", "http://127.0.0.1:8000/"),
    "APP_TITLE": "streamchat demo",
    "ENCRYPTION_KEYS": env_list("STREAMCHAT_ENCRYPTION_KEYS", ""),
}

# streamchat's secrets stay out of error pages and error mails, DEBUG on or off (docs/security.md).
DEFAULT_EXCEPTION_REPORTER_FILTER = "streamchat.debug.SecretsExceptionReporterFilter"

# Each record is written once: one handler, on the root logger. (A handler on the `streamchat`
# logger as well wrote each of its lines twice under Daphne, whose command line puts a handler on
# the root logger; Django's own console handler did the same to Django's lines under DEBUG.) The
# root logger's level is left as the server sets it (Daphne's -v: INFO by default; WARNING
# without a server); streamchat's lines pass at STREAMCHAT_LOG_LEVEL whatever it is.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"line": {"format": "%(asctime)s %(levelname)-8s %(name)s %(message)s"}},
    "filters": {"require_debug_false": {"()": "django.utils.log.RequireDebugFalse"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "line"},
        "mail_admins": {  # as Django's default: errors mailed to ADMINS when DEBUG is off
            "level": "ERROR",
            "filters": ["require_debug_false"],
            "class": "django.utils.log.AdminEmailHandler",
        },
    },
    "root": {"handlers": ["console"]},
    "loggers": {
        "streamchat": {"level": os.environ.get("STREAMCHAT_LOG_LEVEL", "INFO")},
        "django": {"handlers": ["mail_admins"], "level": "INFO"},  # written by the root's handler
    },
}
