"""The websocket front end: parses frames and speaks docs/protocol.md; the engine does the work.

Deltas of a reply running in this worker go straight from the reply to this socket (coalesced),
never through the channel layer. A reply running in another worker is followed through its
channel-layer group in batches, starting from the text saved in the database.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, load_backend
from django.utils.crypto import constant_time_compare

from .conf import app_settings
from .exceptions import ChatError, not_found
from .models import Message
from .streaming import engine, store
from .streaming.hub import Coalescer, control_group, conversation_group, get_hub, reply_group

logger = logging.getLogger("streamchat.consumers")

PROTOCOL_VERSION = 1
CLOSE_UNAUTHENTICATED = 4401


class RefusalLog:
    """Refused frames are logged, at most ``per_minute`` lines per user and process; the rest are
    counted and the count rides on that user's next logged line. One bad client (many frames, many
    sockets) cannot flood the log, and what is logged names ids and codes, never frame contents."""

    def __init__(self, per_minute: int = 10) -> None:
        self.per_minute = per_minute
        self._windows: dict[Any, list[float]] = {}  # user id -> [window start, lines, left out]

    def admit(self, user_id: Any) -> int | None:
        """None: leave this line out; otherwise how many lines were left out before it."""
        now = time.monotonic()
        window = self._windows.get(user_id)
        if window is None or now - window[0] >= 60:
            if len(self._windows) > 10_000:  # forget idle users, keep memory bounded
                self._windows = {u: w for u, w in self._windows.items() if now - w[0] < 60}
            self._windows[user_id] = [now, 1, 0]
            return int(window[2]) if window else 0
        if window[1] < self.per_minute:
            window[1] += 1
            return 0
        window[2] += 1
        return None


refusal_log = RefusalLog()


class SocketFollower:
    """Shows one reply on one socket: coalesced deltas, then the finish frame."""

    __slots__ = ("consumer", "reply_id", "coalescer", "paused")

    def __init__(self, consumer: ChatConsumer, reply_id: int, *, paused: bool = False) -> None:
        self.consumer = consumer
        self.reply_id = reply_id
        self.coalescer = Coalescer(reply_id, consumer.send_frame)
        self.paused = paused

    def push(self, kind: str, offset: int, text: str) -> None:
        if self.paused:
            self.coalescer.hold(kind, offset, text)
        else:
            self.coalescer.push(kind, offset, text)

    def release(self) -> None:
        """Start sending (after the ack and reply.started frames went out)."""
        self.paused = False
        self.coalescer.kick()

    async def finished(self, frame: dict[str, Any]) -> None:
        self.paused = False
        await self.coalescer.drain()
        self.consumer.following.pop(self.reply_id, None)
        self.consumer.finished_ids.add(self.reply_id)
        await self.consumer.send_frame(frame)


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.user = self.scope.get("user")
        self.following: dict[int, SocketFollower | None] = {}  # None: followed through the layer
        self.remote_known: dict[int, int] = {}  # reply id -> code points sent, for remote replies
        self.subscribed: set[int] = set()
        self.finished_ids: set[int] = set()  # replies whose finish this socket has sent
        if self.user is None or not self.user.is_authenticated:
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            logger.debug("anonymous websocket closed 4401")
            return
        await self.accept()
        # This worker's reaper runs from its first socket on (not only from its first reply).
        await get_hub().ensure_started()
        logger.info("websocket connected: user=%s", self.user.pk)
        await self.send_frame({"type": "hello", "protocol": PROTOCOL_VERSION, "user": self.user.pk})

    async def disconnect(self, code: int) -> None:
        following = getattr(self, "following", {})
        for reply_id, follower in list(following.items()):
            run = engine.local_run(reply_id)
            if follower is not None:
                follower.coalescer.close()
                if run is not None:
                    run.unfollow(follower)
                    if app_settings.CANCEL_ON_DISCONNECT:
                        run.stop()
            else:
                await self.channel_layer.group_discard(reply_group(reply_id), self.channel_name)
        for conversation_id in getattr(self, "subscribed", set()):
            await self.channel_layer.group_discard(
                conversation_group(conversation_id), self.channel_name
            )
        if getattr(self, "user", None) is not None and self.user.is_authenticated:
            logger.info("websocket closed: user=%s code=%s", self.user.pk, code)

    async def send_frame(self, frame: dict[str, Any]) -> None:
        try:
            # default=str: a host's user model may have a UUID primary key.
            await self.send(text_data=json.dumps(frame, ensure_ascii=False, default=str))
        except Exception:  # the socket went away; the reply goes on without it
            logger.debug("websocket send failed for user=%s", getattr(self.user, "pk", None))

    # -- incoming frames ---------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not self.user or not self.user.is_authenticated:
            return
        frame: Any = None
        try:
            if text_data is None or text_data == "":
                raise ChatError("unsupported_data", "Send JSON text frames.")
            limit = app_settings.MAX_FRAME_BYTES
            if len(text_data) > limit or len(text_data.encode("utf-8", "surrogatepass")) > limit:
                raise ChatError("message_too_large", f"Frames are limited to {limit} bytes.")
            try:
                frame = json.loads(text_data)
            except ValueError:
                raise ChatError("bad_json", "The frame is not valid JSON.") from None
            if not isinstance(frame, dict):
                raise ChatError("bad_json", "The frame must be a JSON object.")
            if not await self._session_still_valid():
                expired = ChatError("auth_expired", "Your session ended: log in again.")
                client_id = frame.get("client_id")
                await self.send_frame(
                    expired.as_frame(
                        client_id=client_id[:64] if isinstance(client_id, str) else None
                    )
                )
                await self.close(code=CLOSE_UNAUTHENTICATED)
                logger.info("websocket session ended: user=%s, closed 4401", self.user.pk)
                return
            kind = frame.get("type")
            handler = self.HANDLERS.get(kind) if isinstance(kind, str) else None
            if handler is None:
                raise ChatError("unknown_type", "Unknown frame type.", field="type")
            await handler(self, frame)
        except ChatError as error:
            extra: dict[str, Any] = {}
            if isinstance(frame, dict):
                if isinstance(frame.get("client_id"), str):
                    extra["client_id"] = frame["client_id"][:64]
                if frame.get("type") in ("stop", "resume") and isinstance(frame.get("reply"), int):
                    extra["reply"] = frame["reply"]
            self._log_refusal(error, frame)
            await self.send_frame(error.as_frame(**extra))

    def _log_refusal(self, error: ChatError, frame: Any) -> None:
        left_out = refusal_log.admit(self.user.pk)
        if left_out is None:
            return
        kind = frame.get("type") if isinstance(frame, dict) else None
        reply = frame.get("reply") if isinstance(frame, dict) else None
        logger.info(
            "websocket frame refused: user=%s type=%s code=%s%s%s%s",
            self.user.pk,
            kind if isinstance(kind, str) and kind in self.HANDLERS else "-",
            error.code,
            f" field={error.field}" if error.field else "",
            f" reply={reply}" if isinstance(reply, int) and not isinstance(reply, bool) else "",
            f" ({left_out} more refusals of this user not logged)" if left_out else "",
        )

    async def _session_still_valid(self) -> bool:
        """Logged out, password changed, deactivated or expired since connect: not valid (WS-10)."""
        session = self.scope.get("session")
        key = getattr(session, "session_key", None)
        if session is None or not key:
            return False
        return await database_sync_to_async(_session_matches)(session.__class__, key, self.user)

    async def on_send(self, frame: dict[str, Any]) -> None:
        await self._start_reply(
            engine.asend,
            frame,
            content=frame.get("content"),
            conversation_id=engine.validate_id(
                frame.get("conversation"), "conversation", optional=True
            ),
            parent_id=engine.validate_id(frame.get("parent"), "parent", optional=True),
        )

    async def on_regenerate(self, frame: dict[str, Any]) -> None:
        await self._start_reply(
            engine.aregenerate, frame, reply_id=engine.validate_id(frame.get("reply"), "reply")
        )

    async def on_edit(self, frame: dict[str, Any]) -> None:
        await self._start_reply(
            engine.aedit,
            frame,
            message_id=engine.validate_id(frame.get("message"), "message"),
            content=frame.get("content"),
        )

    async def _start_reply(self, start: Any, frame: dict[str, Any], **fields: Any) -> None:
        """Call an engine entry point with the fields every reply-starting frame shares."""
        follower = SocketFollower(self, 0, paused=True)  # learns its reply id in _started
        accepted = await start(
            self.user,
            client_id=frame.get("client_id"),
            model=frame.get("model"),
            options=engine.validate_options(frame.get("temperature"), frame.get("max_tokens")),
            follower=follower,
            **fields,
        )
        await self._started(accepted, follower)

    async def on_stop(self, frame: dict[str, Any]) -> None:
        reply_id = engine.validate_id(frame.get("reply"), "reply")
        if not await engine.astop(self.user, reply_id):
            raise ChatError("not_found", "No such streaming reply.")

    async def on_resume(self, frame: dict[str, Any]) -> None:
        reply_id = engine.validate_id(frame.get("reply"), "reply")
        offset = frame.get("offset", 0)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ChatError("invalid", "offset must be a whole number ≥ 0.", field="offset")
        await self._follow(reply_id, offset)  # type: ignore[arg-type]

    async def on_subscribe(self, frame: dict[str, Any]) -> None:
        conversation_id = engine.validate_id(frame.get("conversation"), "conversation")
        await database_sync_to_async(store.owned_conversation)(self.user.pk, conversation_id)
        if conversation_id not in self.subscribed:
            self.subscribed.add(conversation_id)  # type: ignore[arg-type]
            await self.channel_layer.group_add(
                conversation_group(conversation_id), self.channel_name
            )  # type: ignore[arg-type]

    async def on_ping(self, frame: dict[str, Any]) -> None:
        await self.send_frame({"type": "pong"})

    HANDLERS = {
        "send": on_send,
        "regenerate": on_regenerate,
        "edit": on_edit,
        "stop": on_stop,
        "resume": on_resume,
        "subscribe": on_subscribe,
        "ping": on_ping,
    }

    # -- following replies -------------------------------------------------------------------

    async def _started(self, accepted: engine.Accepted, follower: SocketFollower) -> None:
        follower.reply_id = follower.coalescer.reply_id = accepted.reply_id
        await self.send_frame(
            {
                "type": "ack",
                "client_id": accepted.client_id,
                "conversation": accepted.conversation_id,
                "message": accepted.message_id,
                "reply": accepted.reply_id,
                "duplicate": accepted.duplicate,
            }
        )
        if accepted.conversation_id not in self.subscribed:
            self.subscribed.add(accepted.conversation_id)
            await self.channel_layer.group_add(
                conversation_group(accepted.conversation_id), self.channel_name
            )
        if accepted.new_conversation:
            await self.send_frame(
                {
                    "type": "conversation.updated",
                    "conversation": accepted.conversation_id,
                    "title": accepted.title,
                }
            )
        if accepted.duplicate:
            if accepted.reply_id and accepted.run is None:
                await self._follow(accepted.reply_id, 0)
            elif accepted.run is not None:
                self.following[accepted.reply_id] = follower
                follower.release()
            return
        await self.send_frame(
            {
                "type": "reply.started",
                "conversation": accepted.conversation_id,
                "reply": accepted.reply_id,
                "parent": accepted.parent_id,
                "model": accepted.model,
                "client_id": accepted.client_id,
            }
        )
        if accepted.run is not None and not accepted.run.done.is_set():
            self.following[accepted.reply_id] = follower
        follower.release()

    async def _follow(self, reply_id: int, offset: int) -> None:
        """Send reply ``reply_id`` from ``offset``, then live: locally, or through the layer."""
        if reply_id in self.following:
            await self._resend(reply_id, offset)
            return
        run = engine.local_run(reply_id)
        if run is not None:
            owner = run.origin.user_id
            if owner != self.user.pk:
                raise not_found("reply")
            follower = SocketFollower(self, reply_id)
            self.following[reply_id] = follower
            run.follow(follower, offset)
            return
        # Not running here: join its group first, then read what is saved (no gap in between).
        self.following[reply_id] = None
        await self.channel_layer.group_add(reply_group(reply_id), self.channel_name)
        reply = await database_sync_to_async(_owned_reply)(self.user.pk, reply_id)
        if reply is None:
            await self._drop_remote(reply_id)
            raise not_found("reply")
        if reply.status == Message.Status.STREAMING:
            await self.channel_layer.group_send(
                control_group(reply_id), {"type": "streamchat.watch", "reply": reply_id}
            )
        if offset < len(reply.content):
            await self.send_frame(
                {
                    "type": "delta",
                    "reply": reply_id,
                    "offset": offset,
                    "text": reply.content[offset:],
                }
            )
        self.remote_known[reply_id] = max(offset, len(reply.content))
        if reply.is_final:
            await self._drop_remote(reply_id)
            self.finished_ids.add(reply_id)
            await self.send_frame(await database_sync_to_async(store.finished_frame)(reply))

    async def _resend(self, reply_id: int, offset: int) -> None:
        """A client following a reply on this socket saw a gap: send its text from ``offset``."""
        follower = self.following[reply_id]
        run = engine.local_run(reply_id)
        if follower is not None and run is not None:
            follower.coalescer.close()  # what it held is part of the text sent now
            text = run.text_from(offset)
        else:
            reply = await database_sync_to_async(_owned_reply)(self.user.pk, reply_id)
            text = reply.content[offset:] if reply is not None else ""
            if reply_id in self.remote_known:
                self.remote_known[reply_id] = max(self.remote_known[reply_id], offset + len(text))
        if text:
            await self.send_frame(
                {"type": "delta", "reply": reply_id, "offset": offset, "text": text}
            )

    async def _drop_remote(self, reply_id: int) -> None:
        self.following.pop(reply_id, None)
        self.remote_known.pop(reply_id, None)
        await self.channel_layer.group_discard(reply_group(reply_id), self.channel_name)

    async def _catch_up(self, reply_id: int) -> None:
        """Fill a gap from the database (a checkpoint happened after we read it)."""
        reply = await database_sync_to_async(_owned_reply)(self.user.pk, reply_id)
        known = self.remote_known.get(reply_id, 0)
        if reply is not None and len(reply.content) > known:
            await self.send_frame(
                {"type": "delta", "reply": reply_id, "offset": known, "text": reply.content[known:]}
            )
            self.remote_known[reply_id] = len(reply.content)

    # -- channel-layer events ----------------------------------------------------------------

    async def streamchat_delta(self, event: dict[str, Any]) -> None:
        """A batch from a reply in another worker: the text from its last checkpoint (``base``)."""
        reply_id = event["reply"]
        if reply_id not in self.remote_known:
            return
        known = self.remote_known[reply_id]
        base, text = event["base"], event["text"]
        if base > known:
            await self._catch_up(reply_id)
            known = self.remote_known[reply_id]
        end = base + len(text)
        if end > known >= base:
            await self.send_frame(
                {"type": "delta", "reply": reply_id, "offset": known, "text": text[known - base :]}
            )
            self.remote_known[reply_id] = end

    async def streamchat_finished(self, event: dict[str, Any]) -> None:
        reply_id = event["reply"]
        if reply_id in self.remote_known:
            if self.remote_known[reply_id] < event["length"]:
                await self._catch_up(reply_id)
            await self._drop_remote(reply_id)
            self.finished_ids.add(reply_id)
            await self.send_frame({**event, "type": "reply.finished"})
        elif (
            reply_id not in self.following
            and reply_id not in self.finished_ids
            and event.get("conversation") in self.subscribed
        ):
            # Another tab's reply that this socket did not follow: still say it ended.
            await self.send_frame({**event, "type": "reply.finished"})

    async def streamchat_started(self, event: dict[str, Any]) -> None:
        reply_id = event["reply"]
        if (
            reply_id in self.following
            or reply_id in self.finished_ids
            or event["conversation"] not in self.subscribed
        ):
            return
        await self.send_frame({**event, "type": "reply.started"})
        try:
            await self._follow(reply_id, 0)
        except ChatError:
            pass

    async def streamchat_conversation(self, event: dict[str, Any]) -> None:
        if event["conversation"] in self.subscribed:
            await self.send_frame({**event, "type": "conversation.updated"})


def _owned_reply(user_id: int, reply_id: int) -> Message | None:
    return Message.objects.filter(
        pk=reply_id, conversation__owner_id=user_id, role=Message.Role.ASSISTANT
    ).first()


def _session_matches(store_class: Any, session_key: str, user: Any) -> bool:
    session = store_class(session_key)
    user_id = session.get(SESSION_KEY)
    if user_id is None or str(user_id) != str(user.pk):
        return False
    backend_path = session.get(BACKEND_SESSION_KEY)
    try:
        current = load_backend(backend_path).get_user(user.pk) if backend_path else None
    except Exception:
        return False
    if current is None or not getattr(current, "is_active", True):
        return False
    stored_hash = session.get(HASH_SESSION_KEY)
    return bool(stored_hash) and constant_time_compare(stored_hash, current.get_session_auth_hash())
