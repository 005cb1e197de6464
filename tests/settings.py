"""Test settings: the demo's settings, with fast password hashing and a quiet test database."""

from orchat_site.settings import *  # noqa: F401,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tests choose their channel layer explicitly (Redis tests override this).
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
STREAMCHAT = {**STREAMCHAT, "API_KEY": None}  # noqa: F405

# A file, not memory, so live servers in other processes (Daphne) see the same test database.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "var" / "test-db.sqlite3")}  # noqa: F405
    (BASE_DIR / "var").mkdir(exist_ok=True)  # noqa: F405
