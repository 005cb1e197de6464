"""Following a reply: one follower class for every front end, one way to follow from anywhere.

A ``StreamFollower`` turns a reply's deltas into frames for one reader (a websocket, an SSE or API
response): it coalesces them (``DELTA_COALESCE_MS``; the first never waits), never repeats what
its reader holds (overlaps are trimmed per kind, ``delta`` / ``reasoning``), and hands frames to a
``sink``: the socket's send, or a queue (``QueueFollower``).

``afollow`` follows a reply from the positions a reader already holds, wherever it runs:

- **in this process**: the running reply pushes its deltas to the follower directly (nothing per
  delta touches the database or the channel layer);
- **in another worker, or ended**: the follower joins the reply's channel-layer group on a channel
  of its own, reads what the row holds, asks the running worker to publish (``watch``), and from
  then on gets the text since the last checkpoint every ``GROUP_BATCH_MS`` and the finish; a gap
  (a checkpoint it missed) is filled from the row. A reply whose worker died ends when a reaper
  marks it interrupted and announces it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from channels.layers import get_channel_layer
from django.db import DatabaseError

from ..conf import app_settings
from ..exceptions import not_found
from ..models import Message
from . import db, frames
from .events import DeltaKind, Finished
from .hub import control_group, get_hub, reply_group
from .layer import trouble as layer_trouble

logger = logging.getLogger("streamchat.streaming")

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


class StreamFollower:
    """Shows one reply to one reader: coalesced ``delta``/``reasoning`` frames, then the
    ``reply.finished`` frame, each handed to ``sink``. ``paused`` holds deltas until ``release``
    (a reply's first deltas may come before the reader learned its id)."""

    __slots__ = (
        "reply_id",
        "sink",
        "coalescer",
        "paused",
        "closed",
        "sent",
        "result",
        "_on_close",
        "_held_finish",
        "_held_events",
    )

    def __init__(
        self,
        sink: Send,
        reply_id: int | None = None,
        *,
        offset: int = 0,
        reasoning_offset: int = 0,
        window: float | None = None,
        paused: bool = False,
    ) -> None:
        self.reply_id = reply_id
        self.sink = sink
        self.coalescer = Coalescer(reply_id, sink, window)  # type: ignore[arg-type]
        self.paused = paused
        self.closed = False
        # Code points of each kind already handed on (or held by the reader from the start).
        self.sent = {"delta": offset, "reasoning": reasoning_offset}
        self._on_close: list[Callable[[], Any]] = []
        self.result: Finished | None = None
        self._held_finish: Finished | None = None
        self._held_events: list[dict[str, Any]] = []

    def push(self, kind: DeltaKind, offset: int, text: str) -> None:
        if self.closed:
            return
        sent = self.sent[kind]
        end = offset + len(text)
        if end <= sent:
            return
        if offset < sent:  # the reader holds the start of it
            text = text[sent - offset :]
            offset = sent
        self.sent[kind] = end
        if self.paused:
            self.coalescer.hold(kind, offset, text)
        else:
            self.coalescer.push(kind, offset, text)

    def release(self, reply_id: int | None) -> None:
        """Start handing on frames, now that they can name their reply (after the reader got
        the frames that announce it)."""
        self.reply_id = self.coalescer.reply_id = reply_id  # type: ignore[assignment]
        self.paused = False
        self.coalescer.kick()
        if self._held_events or self._held_finish is not None:
            get_hub().spawn(self._send_held())

    async def _send_held(self) -> None:
        events, self._held_events = self._held_events, []
        for frame in events:
            await self.event(frame)
        if self._held_finish is not None:
            event, self._held_finish = self._held_finish, None
            await self.finished(event)

    async def event(self, frame: dict[str, Any]) -> None:
        """A frame other than text (``tool.call``, ``tool.result``, ``tool.confirm``): sent after
        the text pending before it, so the reader sees them in the reply's order. Rare (per tool
        call, never per delta)."""
        if self.closed:
            return
        if self.paused:
            self._held_events.append(frame)
            return
        await self.coalescer.drain()
        await self.sink(frame)

    async def finished(self, event: Finished) -> None:
        if self.closed:
            return
        if self.paused:  # it ended before its reader learned it began: keep the order
            self._held_finish = event
            return
        self.result = event
        await self.coalescer.drain()
        self.closed = True
        await self.sink(frames.finished(event))
        self._run_close_callbacks()

    def discard_pending(self) -> None:
        """Forget held deltas (the reader is about to get that text another way)."""
        self.coalescer.close()

    def on_close(self, callback: Callable[[], Any]) -> None:
        self._on_close.append(callback)

    def close(self) -> None:
        """The reader went away: stop following (the reply itself goes on)."""
        self.closed = True
        self.coalescer.close()
        self._run_close_callbacks()

    def _run_close_callbacks(self) -> None:
        callbacks, self._on_close = self._on_close, []
        for callback in callbacks:
            callback()


class QueueFollower(StreamFollower):
    """A follower whose frames wait in a queue for one reader (``get``): SSE and API responses."""

    __slots__ = ("queue",)

    def __init__(self, reply_id: int | None = None, **options: Any) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        super().__init__(self._put, reply_id, **options)

    async def _put(self, frame: dict[str, Any]) -> None:
        self.queue.put_nowait(frame)

    async def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next frame, or None when ``timeout`` seconds passed without one."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None


async def afollow(user_id: Any, reply_id: int, follower: StreamFollower) -> None:
    """Make ``follower`` show ``user_id``'s reply ``reply_id`` from the positions it holds
    (``follower.sent``) to its end, wherever the reply runs.

    Raises ``ChatError("not_found")`` for a missing reply and for another user's (WS-11). Call
    ``follower.close()`` when the reader goes away.
    """
    hub = get_hub()
    run = hub.runs.get(reply_id)
    if run is not None:
        if run.user_id != user_id:
            raise not_found("reply")
        if run.result is None:
            run.follow(follower, follower.sent["delta"])
            follower.on_close(lambda: run.unfollow(follower))
        else:
            # Ended a moment ago (its followers were told already): all of it is in memory.
            follower.push("reasoning", 0, "".join(run.reasoning))
            follower.push("delta", 0, run.text_from(0))
            for frame in run.tool_frames:
                await follower.event(frame)
            await follower.finished(run.result)
        return
    # This worker's reaper runs from its first follower on, so a dead worker's reply ends.
    try:
        await hub.ensure_started()
    except Exception as error:
        layer_trouble("starting the engine's listener", error)
    layer = get_channel_layer()
    channel: str | None = None
    try:
        channel = await layer.new_channel()
        # Join first, then read the row: nothing published in between is missed.
        await layer.group_add(reply_group(reply_id), channel)
    except Exception as error:  # the layer is away: follow the row's checkpoints instead
        layer_trouble("following a reply in another worker", error)
        channel = None
    try:
        reply = await db.run(owned_reply, user_id, reply_id)
        if reply is None:
            raise not_found("reply")
    except BaseException:
        await _leave(layer, reply_id, channel)
        raise
    task = hub.spawn(_follow_remote(follower, user_id, reply, layer, channel))
    # Closing the follower ends its task, unless the task itself is what closes it.
    follower.on_close(lambda: None if task is asyncio.current_task() else task.cancel())


async def _follow_remote(
    follower: StreamFollower, user_id: Any, reply: Message, layer: Any, channel: str | None
) -> None:
    """Batches through the channel layer; while the layer is away, the row every
    ``CHECKPOINT_MS`` (a little later, no less complete: the worker running the reply checkpoints
    to the database whatever happens to the layer)."""
    reply_id = reply.pk
    try:
        _push_row(follower, reply)
        # The tool calls it made so far (rare: most replies have none, and cost one query).
        for frame in await db.run(frames.stored_tool_frames, reply_id):
            await follower.event(frame)
        if reply.is_final:
            await follower.finished(await db.run(frames.finished_event, reply))
            return
        if channel is not None:
            try:
                await layer.group_send(
                    control_group(reply_id), {"type": "streamchat.watch", "reply": reply_id}
                )
            except Exception as error:
                layer_trouble("asking another worker for a reply", error)
                await _leave(layer, reply_id, channel)
                channel = None
        while not follower.closed:
            if channel is None:
                await asyncio.sleep(app_settings.CHECKPOINT_MS / 1000)
                try:
                    fresh = await db.run(owned_reply, user_id, reply_id)
                except DatabaseError:
                    continue  # the database is away too: try again at the next interval
                if fresh is None:
                    await follower.finished(
                        frames.deleted(reply_id, reply.conversation_id, reply.model, 0)
                    )
                    return
                _push_row(follower, fresh)
                if fresh.is_final:
                    await follower.finished(await db.run(frames.finished_event, fresh))
                    return
                continue
            try:
                message = await layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                layer_trouble("following a reply in another worker", error)
                await _leave(layer, reply_id, channel)
                channel = None
                continue
            kind = message.get("type")
            if kind == "streamchat.delta":
                if message["base"] > follower.sent["delta"]:
                    if not await _catch_up(follower, user_id, reply):
                        return
                follower.push("delta", message["base"], message["text"])
            elif kind == "streamchat.tool":
                await follower.event(message["frame"])
            elif kind == "streamchat.finished":
                if follower.sent["delta"] < message["length"]:
                    if not await _catch_up(follower, user_id, reply):
                        return
                await follower.finished(frames.finished_from(message))
                return
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("streamchat: following reply %s failed", reply_id)
        follower.close()
    finally:
        await _leave(layer, reply_id, channel)


async def _leave(layer: Any, reply_id: int, channel: str | None) -> None:
    if channel is None:
        return
    try:
        await layer.group_discard(reply_group(reply_id), channel)
    except Exception:
        logger.debug("streamchat: leaving the group of reply %s failed", reply_id)


async def _catch_up(follower: StreamFollower, user_id: Any, reply: Message) -> bool:
    """Fill a gap from the row (a checkpoint happened after we read it). False: it was deleted."""
    fresh = await db.run(owned_reply, user_id, reply.pk)
    if fresh is None:
        await follower.finished(
            frames.deleted(reply.pk, reply.conversation_id, reply.model, len(reply.content))
        )
        return False
    _push_row(follower, fresh)
    return True


def _push_row(follower: StreamFollower, reply: Message) -> None:
    if reply.reasoning:
        follower.push("reasoning", 0, reply.reasoning)
    if reply.content:
        follower.push("delta", 0, reply.content)


def owned_reply(user_id: Any, reply_id: int) -> Message | None:
    return Message.objects.filter(
        pk=reply_id, conversation__owner_id=user_id, role=Message.Role.ASSISTANT
    ).first()
