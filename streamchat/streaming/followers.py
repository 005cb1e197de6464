"""Followers that hand a reply's frames to one reader through a queue: the SSE and the
OpenAI-compatible responses. (The websocket's ``SocketFollower`` writes to its socket instead;
both coalesce with the same ``Coalescer``.)

``afollow`` follows a reply from the positions a client already holds, wherever it runs:

- **in this process**: the running reply pushes its deltas to the follower directly, as it does
  for a websocket (nothing per delta touches the database or the channel layer);
- **anywhere else, or already ended**: the follower reads the reply's row every ``CHECKPOINT_MS``
  and sends the text saved since. A reply in another worker is checkpointed at that interval, so
  this costs a little latency (at most one checkpoint interval) and one small query per interval
  per follower, and needs no channel layer; a reply whose worker died ends when the reaper marks it
  interrupted, like any other.

Either way the reader gets exactly the text it does not hold (no gap, no repeat), then the
``reply.finished`` frame. Overlaps are trimmed here, per kind (``delta`` / ``reasoning``), so a
follower that starts mid-reply never repeats what its reader has.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async

from ..conf import app_settings
from ..exceptions import not_found
from ..models import Message
from . import store
from .hub import Coalescer, get_hub


class QueueFollower:
    """Frames of one reply, coalesced, waiting in a queue for one reader (``get``)."""

    __slots__ = ("reply_id", "queue", "coalescer", "paused", "closed", "_sent", "_on_close")

    def __init__(
        self,
        reply_id: int | None,
        *,
        offset: int = 0,
        reasoning_offset: int = 0,
        window: float | None = None,
        paused: bool = False,
    ) -> None:
        self.reply_id = reply_id
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.coalescer = Coalescer(reply_id, self._put, window)  # type: ignore[arg-type]
        self.paused = paused  # holds deltas until ``release`` (its reply id is not known yet)
        self.closed = False
        # Code points of each kind already handed on (or held by the reader from the start).
        self._sent = {"delta": offset, "reasoning": reasoning_offset}
        self._on_close: list[Callable[[], Any]] = []

    def push(self, kind: str, offset: int, text: str) -> None:
        if self.closed:
            return
        sent = self._sent[kind]
        end = offset + len(text)
        if end <= sent:
            return
        if offset < sent:  # the reader holds the start of it
            text = text[sent - offset :]
            offset = sent
        self._sent[kind] = end
        if self.paused:
            self.coalescer.hold(kind, offset, text)
        else:
            self.coalescer.push(kind, offset, text)

    def release(self, reply_id: int | None) -> None:
        """Start handing on frames, now that they can name their reply."""
        self.reply_id = self.coalescer.reply_id = reply_id  # type: ignore[assignment]
        self.paused = False
        self.coalescer.kick()

    async def finished(self, frame: dict[str, Any]) -> None:
        if self.closed:
            return
        self.paused = False
        await self.coalescer.drain()
        self.queue.put_nowait(frame)

    async def _put(self, frame: dict[str, Any]) -> None:
        self.queue.put_nowait(frame)

    async def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next frame, or None when ``timeout`` seconds passed without one."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

    def on_close(self, callback: Callable[[], Any]) -> None:
        self._on_close.append(callback)

    def close(self) -> None:
        """The reader went away: stop following (the reply itself goes on)."""
        self.closed = True
        self.coalescer.close()
        callbacks, self._on_close = self._on_close, []
        for callback in callbacks:
            callback()


async def afollow(
    user_id: int, reply_id: int, *, offset: int = 0, reasoning_offset: int = 0
) -> QueueFollower:
    """Follow ``user_id``'s reply ``reply_id`` from ``offset`` (text) and ``reasoning_offset``.

    Raises ``ChatError("not_found")`` for a missing reply and for another user's (WS-11). Call
    ``close()`` on the follower when the reader goes away.
    """
    from .engine import local_run

    hub = get_hub()
    # This worker's reaper runs from its first follower on, so a dead worker's reply ends.
    await hub.ensure_started()
    follower = QueueFollower(reply_id, offset=offset, reasoning_offset=reasoning_offset)
    run = local_run(reply_id)
    if run is not None:
        if run.origin.user_id != user_id:
            raise not_found("reply")
        if run.finished_frame is None:
            run.follow(follower, offset)
            follower.on_close(lambda: run.unfollow(follower))
        else:
            # Ended a moment ago (its followers were told already): all of it is in memory.
            follower.push("reasoning", 0, "".join(run.reasoning))
            follower.push("delta", 0, run.text_from(0))
            await follower.finished(run.finished_frame)
        return follower
    reply = await database_sync_to_async(_owned_reply)(user_id, reply_id)
    if reply is None:
        raise not_found("reply")
    poller = asyncio.get_running_loop().create_task(_poll(follower, user_id, reply))
    follower.on_close(poller.cancel)
    return follower


async def _poll(follower: QueueFollower, user_id: int, reply: Message) -> None:
    """Hand on the text each checkpoint saved until the row is final, then its finish frame."""
    every = app_settings.CHECKPOINT_MS / 1000
    reply_id = reply.pk
    while True:
        if reply.reasoning:
            follower.push("reasoning", 0, reply.reasoning)
        if reply.content:
            follower.push("delta", 0, reply.content)
        if reply.is_final:
            frame = await database_sync_to_async(store.finished_frame)(reply)
            await follower.finished(frame)
            return
        await asyncio.sleep(every)
        fresh = await database_sync_to_async(_owned_reply)(user_id, reply_id)
        if fresh is None:  # its conversation was deleted meanwhile
            await follower.finished(
                {
                    "type": "reply.finished",
                    "reply": reply_id,
                    "conversation": reply.conversation_id,
                    "status": Message.Status.ERROR,
                    "finish_reason": "error",
                    "model": reply.model,
                    "length": len(reply.content),
                    "usage": None,
                    "ttft_ms": None,
                    "error": {"code": "not_found", "message": "The reply was deleted."},
                }
            )
            return
        reply = fresh


def _owned_reply(user_id: int, reply_id: int) -> Message | None:
    return Message.objects.filter(
        pk=reply_id, conversation__owner_id=user_id, role=Message.Role.ASSISTANT
    ).first()
