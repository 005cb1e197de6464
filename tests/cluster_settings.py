"""Settings of the cluster's workers in tests (tests/cluster.py, tests/test_cluster.py): the test
settings, plus the drain timeout from STREAMCHAT_LIVE_DRAIN_SECONDS (s), so a rolling restart in
a test takes seconds rather than the default 30."""

import os

from tests.settings import *  # noqa: F401,F403

if os.environ.get("STREAMCHAT_LIVE_DRAIN_SECONDS"):
    STREAMCHAT["DRAIN_SECONDS"] = float(os.environ["STREAMCHAT_LIVE_DRAIN_SECONDS"])  # noqa: F405
