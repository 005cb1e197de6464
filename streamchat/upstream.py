"""Is ``BASE_URL`` streamchat's simulator? The chat page shows "replies come from the simulator"
only when the simulator itself says so (its ``X-Streamchat-Simulator: 1`` header), not for any
loopback address: an egress proxy to the real OpenRouter is loopback too.

The answer is stored per base URL in the database (``UpstreamProbe``), so every worker shows the
same banner; nothing on a send's path reads it. It is learned by a probe, ``GET {BASE_URL}/models``
(no key needed): after a model sync, and on the first chat page for a base URL nothing is stored
for. A probe that got no answer is retried after ``RETRY_SECONDS``.
"""

from __future__ import annotations

import datetime as dt
import logging
import urllib.error
import urllib.request

from django.utils import timezone

from .conf import app_settings

logger = logging.getLogger(__name__)

SIMULATOR_HEADER = "X-Streamchat-Simulator"
# Short: the first chat page for a base URL waits for it (once).
PROBE_TIMEOUT = 2.0
RETRY_SECONDS = 600


def probe(base_url: str | None = None) -> bool:
    """Ask ``base_url`` (default ``BASE_URL``) whether it is the simulator, store the answer and
    return it (False when it did not answer)."""
    from .models import UpstreamProbe

    base_url = base_url or app_settings.BASE_URL
    simulator, answered = False, False
    request = urllib.request.Request(f"{base_url.rstrip('/')}/models", method="GET")
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT) as response:  # noqa: S310
            simulator, answered = response.headers.get(SIMULATOR_HEADER) == "1", True
    except urllib.error.HTTPError as error:  # an answer all the same: its headers count
        simulator, answered = error.headers.get(SIMULATOR_HEADER) == "1", True
    except (OSError, ValueError) as error:  # unreachable, or not a URL
        logger.info("streamchat: probing %s failed (%s)", base_url, type(error).__name__)
    UpstreamProbe.objects.update_or_create(
        base_url=base_url,
        defaults={"simulator": simulator, "answered": answered, "checked": timezone.now()},
    )
    return simulator


def is_simulator() -> bool:
    """Whether ``BASE_URL`` said it is the simulator; probes when nothing (recent) is stored."""
    from .models import UpstreamProbe

    base_url = app_settings.BASE_URL
    row = UpstreamProbe.objects.filter(base_url=base_url).first()
    stale = timezone.now() - dt.timedelta(seconds=RETRY_SECONDS)
    if row is None or (not row.answered and row.checked < stale):
        return probe(base_url)
    return row.simulator
