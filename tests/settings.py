"""Test settings: the demo's settings, with fast password hashing and a quiet test database.

Live servers started by the tests (Daphne processes) use these settings too, and get their
upstream, database and channel layer from the environment the test gives them:
STREAMCHAT_LIVE_BASE_URL / STREAMCHAT_LIVE_API_KEY (the simulator), DATABASE_URL (the test
database) and REDIS_URL (set: the Redis channel layer). Worker-death tests make a live server's
leases short with STREAMCHAT_LIVE_LEASE_SECONDS (s) and STREAMCHAT_LIVE_CHECKPOINT_MS (ms); unset,
the defaults apply. STREAMCHAT_LIVE_DRAIN_SECONDS sets the drain on SIGTERM (default 0.5 s here);
STREAMCHAT_LIVE_LANGUAGE_CODE, LANGUAGE_CODE.
"""

import os

from orchat_site.settings import *  # noqa: F401,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
if not os.environ.get("REDIS_URL"):
    # In-process tests choose their channel layer explicitly (Redis tests override this).
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
# Never a real key from the developer's shell: upstream is the simulator, set per test.
STREAMCHAT = {  # noqa: F405
    **STREAMCHAT,  # noqa: F405
    "BASE_URL": os.environ.get("STREAMCHAT_LIVE_BASE_URL", "http://127.0.0.1:9/api/v1"),
    "API_KEY": os.environ.get("STREAMCHAT_LIVE_API_KEY") or None,
}
for _name in ("LEASE_SECONDS", "CHECKPOINT_MS"):
    if os.environ.get(f"STREAMCHAT_LIVE_{_name}"):
        STREAMCHAT[_name] = int(os.environ[f"STREAMCHAT_LIVE_{_name}"])
if os.environ.get("STREAMCHAT_LIVE_BASE_URL"):
    # A live server: the test changes models, keys and limits from its own process, whose saves
    # cannot clear this process's snapshots.
    STREAMCHAT["CONFIG_CACHE_SECONDS"] = 0
# A live server stopped at the end of a test drains briefly (drain tests set their own).
STREAMCHAT["DRAIN_SECONDS"] = float(os.environ.get("STREAMCHAT_LIVE_DRAIN_SECONDS") or 0.5)
# A live server in another language (tests/test_i18n.py's Chromium check).
LANGUAGE_CODE = os.environ.get("STREAMCHAT_LIVE_LANGUAGE_CODE") or LANGUAGE_CODE  # noqa: F405

# A file, not memory, so live servers in other processes (Daphne) see the same test database;
# one per test run, so runs side by side do not share it. Live servers get it as DATABASE_URL.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": str(BASE_DIR / "var" / f"test-db-{os.getpid()}.sqlite3")  # noqa: F405
    }
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_streamchat_{os.getpid()}"}  # noqa: F405
(BASE_DIR / "var").mkdir(exist_ok=True)  # noqa: F405

# Attachments: one storage folder per test run, shared with the live servers it starts (they
# inherit the environment); tests look into it to see that nothing was stored.
MEDIA_ROOT = os.environ.setdefault(
    "STREAMCHAT_TEST_MEDIA_ROOT",
    str(BASE_DIR / "var" / f"test-media-{os.getpid()}"),  # noqa: F405
)
