"""Where running replies meet the sockets that follow them.

Per delta, a reply only touches process memory: it hands the text to each local follower, which
coalesces it into frames. Other workers never see single deltas. They see, through the channel
layer:
- ``streamchat.reply.<id>``: batches of new text every ``GROUP_BATCH_MS`` (only once someone on
  another worker watches the reply) and the finish; followers on other workers join it.
- ``streamchat.ctl.<id>``: the worker running the reply listens here for ``watch`` and ``stop``.
- ``streamchat.conv.<id>``: reply started / finished and title changes, for other tabs.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from channels.layers import get_channel_layer

from ..conf import app_settings

if TYPE_CHECKING:
    from .run import ReplyRun

logger = logging.getLogger("streamchat.streaming")


def reply_group(reply_id: int) -> str:
    return f"streamchat.reply.{reply_id}"


def control_group(reply_id: int) -> str:
    return f"streamchat.ctl.{reply_id}"


def conversation_group(conversation_id: int) -> str:
    return f"streamchat.conv.{conversation_id}"


class Follower(Protocol):
    """Something that shows one reply to someone: a websocket, an SSE response."""

    def push(self, kind: str, offset: int, text: str) -> None:
        """New ``kind`` ("delta" or "reasoning") text at ``offset``; called per delta: keep it
        cheap."""

    async def finished(self, frame: dict[str, Any]) -> None:
        """The reply ended; ``frame`` is the ``reply.finished`` frame."""


Send = Callable[[dict[str, Any]], Awaitable[None]]


class Coalescer:
    """Turns deltas into frames: the first goes out at once, later ones within ``window`` seconds
    share a frame. One per follower and reply. Frames leave in order: one flush runs at a time,
    and ``drain()`` (before the finish frame) sends what is left."""

    __slots__ = ("reply_id", "send", "window", "_pending", "_last_sent", "_timer", "_flushing")

    def __init__(self, reply_id: int, send: Send, window: float | None = None) -> None:
        self.reply_id = reply_id
        self.send = send
        self.window = app_settings.DELTA_COALESCE_MS / 1000 if window is None else window
        # kind ("delta" / "reasoning") -> [offset of the first text, texts]
        self._pending: dict[str, list[Any]] = {}
        self._last_sent = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None

    def push(self, kind: str, offset: int, text: str) -> None:
        self.hold(kind, offset, text)
        if self._timer is not None or self._flushing is not None:
            return  # already due; the flush in progress picks this up
        wait = self._last_sent + self.window - time.monotonic()
        if wait <= 0:
            self._start_flush()
        else:
            self._timer = asyncio.get_running_loop().call_later(wait, self._start_flush)

    def hold(self, kind: str, offset: int, text: str) -> None:
        """Keep text without sending it yet (until ``kick``)."""
        pending = self._pending.get(kind)
        if pending is None:
            self._pending[kind] = [offset, [text]]
        else:
            pending[1].append(text)

    def kick(self) -> None:
        if self._pending and self._timer is None:
            self._start_flush()

    def _start_flush(self) -> None:
        self._timer = None
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._pending:
                pending, self._pending = self._pending, {}
                self._last_sent = time.monotonic()
                for kind, (offset, texts) in pending.items():
                    text = texts[0] if len(texts) == 1 else "".join(texts)
                    await self.send(
                        {"type": kind, "reply": self.reply_id, "offset": offset, "text": text}
                    )
        finally:
            self._flushing = None

    async def drain(self) -> None:
        """Send everything pending now, after any flush in progress."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flushing is not None:
            await asyncio.shield(self._flushing)
        if self._pending:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())
            await asyncio.shield(self._flushing)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()


class Hub:
    """This process's running replies, and its listener for requests from other workers."""

    def __init__(self) -> None:
        self.runs: dict[int, ReplyRun] = {}
        self.channel: str | None = None
        self._starting: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

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
        layer = get_channel_layer()
        # The default prefix matters: channels_redis multiplexes all of a process's channels on
        # one Redis list per prefix and serves one receiver per list at a time.
        self.channel = await layer.new_channel()
        self._listener = self.spawn(self._listen(layer))
        self._reaper = self.spawn(self._reap_periodically())

    async def register(self, run: ReplyRun) -> None:
        await self.ensure_started()
        self.runs[run.reply_id] = run
        await get_channel_layer().group_add(control_group(run.reply_id), self.channel)

    async def unregister(self, run: ReplyRun) -> None:
        self.runs.pop(run.reply_id, None)
        if self.channel:
            await get_channel_layer().group_discard(control_group(run.reply_id), self.channel)

    async def _listen(self, layer: Any) -> None:
        while True:
            try:
                message = await layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:  # a layer hiccup must not end the listener
                logger.exception("streamchat engine listener: receive failed")
                await asyncio.sleep(1)
                continue
            run = self.runs.get(message.get("reply"))
            if run is None:
                continue
            if message["type"] == "streamchat.watch":
                run.watched = True
            elif message["type"] == "streamchat.stop":
                run.stop()

    async def _reap_periodically(self) -> None:
        from channels.db import database_sync_to_async

        from .. import limits
        from .store import reap_interrupted

        while True:
            try:
                reaped = await database_sync_to_async(reap_interrupted)()
                if reaped:
                    await announce_interrupted(reaped)
                await limits.areap_expired()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("streamchat: reaping interrupted replies failed")
            await asyncio.sleep(max(1.0, app_settings.LEASE_SECONDS / 2))


async def announce_interrupted(reply_ids: list[int]) -> None:
    """Tell the sockets following replies that were just reaped (on any worker, through the
    channel layer) that they ended: the page shows "interrupted" instead of waiting for deltas
    that will never come. The workers' reaper calls it; so can anything else that reaps."""
    from channels.db import database_sync_to_async

    from .store import finished_frames

    await publish_interrupted(await database_sync_to_async(finished_frames)(reply_ids))


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
