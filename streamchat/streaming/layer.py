"""The channel layer (Redis in production) is optional at runtime.

Only what crosses workers goes through it: followers and stops of a reply in another worker,
other tabs' events. When it is unreachable, a reply keeps streaming to its own sockets and its
checkpoints and leases go on (database only); what needs another worker answers a clear error;
everything recovers when it returns (the layer reconnects on its next use). ``trouble()`` logs
such failures at most once per ``EVERY`` seconds per kind, with a count of those left out, so an
outage cannot flood the log.
"""

from __future__ import annotations

import logging
import time

logger = logging.getLogger("streamchat.streaming")

EVERY = 30.0

_last: dict[str, list[float]] = {}  # kind -> [last logged at, left out since]


def trouble(kind: str, error: BaseException) -> None:
    """Log that the channel layer failed at ``kind`` (a short phrase), rate-limited."""
    now = time.monotonic()
    entry = _last.get(kind)
    if entry is not None and now - entry[0] < EVERY:
        entry[1] += 1
        return
    left_out = int(entry[1]) if entry is not None else 0
    _last[kind] = [now, 0]
    logger.warning(
        "streamchat: the channel layer failed (%s): %s: %s%s",
        kind,
        type(error).__name__,
        error,
        f" ({left_out} more since the last line)" if left_out else "",
    )
