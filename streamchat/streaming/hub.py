"""This process's running replies, and where they meet other workers.

Per delta, a reply only touches process memory (its local followers, see ``follow``). Other
workers never see single deltas. They see, through the channel layer:
- ``streamchat.reply.<id>``: batches of new text every ``GROUP_BATCH_MS`` (only once someone on
  another worker watches the reply) and the finish; followers on other workers join it.
- ``streamchat.ctl.<id>``: the worker running the reply listens here for ``watch``, ``stop`` and
  ``confirm`` (the user's decision on a tool call that waits for it).
- ``streamchat.conv.<id>``: reply started / finished and title changes, for other tabs.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from channels.layers import get_channel_layer

from ..conf import app_settings
from .layer import trouble as layer_trouble

if TYPE_CHECKING:
    from .reply import ReplyRun

logger = logging.getLogger("streamchat.streaming")


def reply_group(reply_id: int) -> str:
    return f"streamchat.reply.{reply_id}"


def control_group(reply_id: int) -> str:
    return f"streamchat.ctl.{reply_id}"


def conversation_group(conversation_id: int) -> str:
    return f"streamchat.conv.{conversation_id}"


class Hub:
    """This process's running replies, and its listener for requests from other workers."""

    def __init__(self) -> None:
        self.runs: dict[int, ReplyRun] = {}
        self.channel: str | None = None
        self._starting: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._active = 0
        self.admitting = 0  # starts between the capacity check and their launch
        self.draining = False  # the worker stops: no new reply (see ``shutdown``)
        self.sockets: set[Any] = set()  # this process's open chat sockets (closed by a drain)

    def spawn(self, coroutine: Awaitable[Any]) -> asyncio.Task[Any]:
        """A task owned by the process, not by any socket: closing a tab does not cancel it."""
        task = asyncio.get_running_loop().create_task(coroutine)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def ensure_started(self) -> None:
        """Start the listener and the reaper once per process. Called when a socket connects, so
        a restarted worker reaps its dead predecessor's replies before anyone sends again."""
        if self._starting is None:  # set before any await: concurrent callers share one start
            self._starting = self.spawn(self._start())
        try:
            await asyncio.shield(self._starting)
        except Exception:
            self._starting = None  # the channel layer failed: the next caller tries again
            raise

    async def _start(self) -> None:
        from . import db

        db.get_threads().start()  # connections open before the first reply needs them
        layer = get_channel_layer()
        # The default prefix matters: channels_redis multiplexes all of a process's channels on
        # one Redis list per prefix and serves one receiver per list at a time.
        self.channel = await layer.new_channel()
        self._listener = self.spawn(self._listen(layer))
        self._reaper = self.spawn(self._reap_periodically())

    @property
    def active(self) -> int:
        """Replies running in this process (API exchanges that are not stored included)."""
        return self._active

    def add(self, run: ReplyRun) -> None:
        """Count ``run`` as running; a stored reply can be found (and stopped) by its id at once,
        and from other workers once its control group is joined (off the reply's path)."""
        self._active += 1
        if run.reply_id is not None:
            self.runs[run.reply_id] = run
            self.spawn(self._join(run.reply_id))

    def remove(self, run: ReplyRun) -> None:
        self._active -= 1
        if run.reply_id is not None and self.runs.get(run.reply_id) is run:
            del self.runs[run.reply_id]
            if self.channel:
                self.spawn(self._leave(run.reply_id))

    async def _join(self, reply_id: int) -> None:
        try:
            await self.ensure_started()
            await get_channel_layer().group_add(control_group(reply_id), self.channel)
        except Exception as error:  # it streams on; other workers cannot follow or stop it
            layer_trouble("making a reply reachable from other workers", error)

    async def _leave(self, reply_id: int) -> None:
        try:
            await get_channel_layer().group_discard(control_group(reply_id), self.channel)
        except Exception:
            logger.debug("streamchat: leaving the control group of reply %s failed", reply_id)

    async def _listen(self, layer: Any) -> None:
        while True:
            try:
                message = await layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the layer is away: try again, it must not end
                layer_trouble("listening for other workers", error)
                await asyncio.sleep(1)
                continue
            run = self.runs.get(message.get("reply"))
            if run is None:
                continue
            if message["type"] == "streamchat.watch":
                run.watch()
            elif message["type"] == "streamchat.stop":
                run.stop()
            elif message["type"] == "streamchat.confirm":
                run.decide(str(message.get("call")), bool(message.get("approve")))

    async def _reap_periodically(self) -> None:
        from .. import limits
        from . import db
        from .store import reap_interrupted

        while True:
            try:
                reaped = await db.run(reap_interrupted)
                await db.run(limits.reap_expired)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("streamchat: reaping interrupted replies failed")
            else:
                if reaped:
                    try:
                        await announce_interrupted(reaped)
                    except Exception as error:  # followers catch up from the rows
                        layer_trouble("announcing interrupted replies", error)
            await asyncio.sleep(max(1.0, app_settings.LEASE_SECONDS / 2))


async def announce_interrupted(reply_ids: list[int]) -> None:
    """Tell the sockets following replies that were just reaped (on any worker, through the
    channel layer) that they ended: the page shows "interrupted" instead of waiting for deltas
    that will never come. The workers' reaper calls it; so can anything else that reaps."""
    from . import db
    from .store import finished_frames

    await publish_interrupted(await db.run(finished_frames, reply_ids))


async def publish_interrupted(frames: list[dict[str, Any]]) -> None:
    """Send reaped replies' finish frames (from ``store.finished_frames``) to their followers."""
    layer = get_channel_layer()
    for frame in frames:
        logger.warning(
            "streamchat: reply %s of user %s interrupted (its worker stopped renewing)",
            frame["reply"],
            frame["user"],
        )
        event = {**frame, "type": "streamchat.finished"}
        event.pop("user")
        await layer.group_send(reply_group(frame["reply"]), event)
        await layer.group_send(conversation_group(frame["conversation"]), event)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The hub of the running event loop (one per process under Daphne; one per test loop)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub
