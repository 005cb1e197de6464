"""Settings of the benchmark's streamchat server: the demo's, pointed at the bench upstream.

Environment (set by ``bench/run.py``): ``DATABASE_URL`` (read by the demo's settings),
``BENCH_UPSTREAM_URL`` (the bench upstream's ``.../api/v1``).
"""

from __future__ import annotations

import os

from orchat_site.settings import *  # noqa: F403
from orchat_site.settings import STREAMCHAT

from . import dbstats

# The shape streamchat.forms.KEY_SHAPE wants, so the first migrate stores it as an API key row.
BENCH_API_KEY = "sk-or-v1-" + "0123456789abcdef" * 4

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "bench.urls"
STREAMCHAT = {
    **STREAMCHAT,
    "BASE_URL": os.environ.get("BENCH_UPSTREAM_URL", "http://127.0.0.1:8765/api/v1"),
    "API_KEY": BENCH_API_KEY,
}
# One in-memory layer and one worker is what is measured; the warning says to use Redis.
SILENCED_SYSTEM_CHECKS = ["streamchat.W001"]

dbstats.install()
