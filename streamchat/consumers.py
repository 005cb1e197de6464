"""The websocket front end: parses frames and speaks docs/protocol.md; the engine does the work.

A thin protocol adapter: each reply this socket shows has one ``StreamFollower`` whose frames go
to the socket; ``follow.afollow`` decides how (straight from a reply in this worker, or through
the channel layer from another). Frames come from ``streaming.frames``, shared with SSE.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, load_backend
from django.db import DatabaseError
from django.utils.crypto import constant_time_compare

from .conf import app_settings
from .exceptions import ChatError, unavailable
from .streaming import db, engine, follow, frames, store
from .streaming.follow import StreamFollower
from .streaming.hub import conversation_group, get_hub
from .streaming.layer import trouble as layer_trouble

logger = logging.getLogger("streamchat.consumers")

PROTOCOL_VERSION = 1
CLOSE_UNAUTHENTICATED = 4401
CLOSE_RESTARTING = 4012  # the worker stops (docs/protocol.md): reconnect and resume
CLOSE_TOO_MANY_SOCKETS = 4429  # above MAX_SOCKETS_PER_USER in this process (docs/protocol.md)

# Open sockets per user in this process (MAX_SOCKETS_PER_USER is a cap per worker).
open_sockets: Counter[Any] = Counter()


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


class ChatConsumer(AsyncWebsocketConsumer):
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Channels' consumer loop, except that a channel layer (Redis) that goes away does not
        end the socket: its receive is retried until the layer is back."""
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.base_send = send
        sources = [receive]
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            sources.append(self._receive_from_layer)
        try:
            await await_many_dispatch(sources, self.dispatch)
        except StopConsumer:
            pass

    async def _receive_from_layer(self) -> Any:
        delay = 0.5
        while True:
            try:
                return await self.channel_layer.receive(self.channel_name)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                layer_trouble("receiving a socket's events", error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def connect(self) -> None:
        self.user = self.scope.get("user")
        self.following: dict[int, StreamFollower] = {}  # reply id -> its follower on this socket
        self.subscribed: set[int] = set()
        self.finished_ids: set[int] = set()  # replies whose finish this socket has sent
        if self.user is None or not self.user.is_authenticated:
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            logger.debug("anonymous websocket closed 4401")
            return
        await self.accept()
        hub = get_hub()
        if hub.draining:  # this worker stops: the page reconnects, to another worker
            await self.close(code=CLOSE_RESTARTING)
            return
        cap = app_settings.MAX_SOCKETS_PER_USER
        if cap is not None and open_sockets[self.user.pk] >= cap:
            await self.close(code=CLOSE_TOO_MANY_SOCKETS)
            if refusal_log.admit(self.user.pk) is not None:
                logger.info(
                    "websocket refused: user=%s has %d open (MAX_SOCKETS_PER_USER), closed %d",
                    self.user.pk,
                    open_sockets[self.user.pk],
                    CLOSE_TOO_MANY_SOCKETS,
                )
            return
        open_sockets[self.user.pk] += 1  # no await since the check: no other connect between
        self.counted = True
        hub.sockets.add(self)  # a drain closes it (4012) once its replies are done
        # This worker's reaper runs from its first socket on (not only from its first reply).
        await hub.ensure_started()
        logger.info("websocket connected: user=%s", self.user.pk)
        await self.send_frame({"type": "hello", "protocol": PROTOCOL_VERSION, "user": self.user.pk})

    async def disconnect(self, code: int) -> None:
        get_hub().sockets.discard(self)
        if getattr(self, "counted", False):
            self.counted = False
            open_sockets[self.user.pk] -= 1
            if open_sockets[self.user.pk] <= 0:
                del open_sockets[self.user.pk]
        following = getattr(self, "following", {})
        for reply_id, follower in list(following.items()):
            follower.close()
            reply = engine.local_reply(reply_id)
            if reply is not None and app_settings.CANCEL_ON_DISCONNECT:
                reply.stop()
        for conversation_id in getattr(self, "subscribed", set()):
            try:
                await self.channel_layer.group_discard(
                    conversation_group(conversation_id), self.channel_name
                )
            except Exception as error:  # the group expires on its own
                layer_trouble("unsubscribing a closed socket", error)
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
            except (ValueError, RecursionError):  # RecursionError: nested deeper than ~1000
                raise ChatError("bad_json", "The frame is not valid JSON.") from None
            if not isinstance(frame, dict):
                raise ChatError("bad_json", "The frame must be a JSON object.")
            kind = frame.get("type")
            handler = self.HANDLERS.get(kind) if isinstance(kind, str) else None
            if handler is None:
                raise ChatError("unknown_type", "Unknown frame type.", field="type")
            # Each handler checks its fields first (no database), then the session: a frame that
            # starts a reply in the engine's one trip, the others with _check_session. So a
            # flood of malformed frames is refused without touching the database.
            try:
                await handler(self, frame)
            except DatabaseError as failure:  # a database blip: refuse this frame, keep the socket
                logger.warning("websocket frame refused: the database failed (%s)", failure)
                raise unavailable() from None
        except ChatError as error:
            if error.code == "auth_expired":
                await self._end_session(error, frame)
                return
            extra: dict[str, Any] = {}
            if isinstance(frame, dict):
                if isinstance(frame.get("client_id"), str):
                    extra["client_id"] = frame["client_id"][:64]
                if frame.get("type") in ("stop", "resume", "tool.confirm") and isinstance(
                    frame.get("reply"), int
                ):
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

    async def _end_session(self, expired: ChatError, frame: Any) -> None:
        client_id = frame.get("client_id") if isinstance(frame, dict) else None
        await self.send_frame(
            expired.as_frame(client_id=client_id[:64] if isinstance(client_id, str) else None)
        )
        await self.close(code=CLOSE_UNAUTHENTICATED)
        logger.info("websocket session ended: user=%s, closed 4401", self.user.pk)

    def _session_check(self) -> Callable[[], bool]:
        """Logged out, password changed, deactivated or expired since connect: not valid (WS-10).
        A sync check, run on an engine database thread (in the engine's trip for a send)."""
        session = self.scope.get("session")
        key = getattr(session, "session_key", None)
        if session is None or not key:
            return lambda: False
        return functools.partial(_session_matches, session.__class__, key, self.user)

    async def _session_still_valid(self) -> bool:
        return await db.run(self._session_check())

    async def _check_session(self) -> None:
        """``auth_expired`` unless the session is still valid (one database trip)."""
        if not await self._session_still_valid():
            raise ChatError("auth_expired", "Your session ended: log in again.")

    async def on_send(self, frame: dict[str, Any]) -> None:
        await self._start_reply(
            engine.asend,
            frame,
            content=frame.get("content"),
            conversation_id=engine.validate_id(
                frame.get("conversation"), "conversation", optional=True
            ),
            parent_id=engine.validate_id(frame.get("parent"), "parent", optional=True),
            attachments=frame.get("attachments"),
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
            attachments=frame.get("attachments"),
        )

    async def _start_reply(self, start: Any, frame: dict[str, Any], **fields: Any) -> None:
        """Call an engine entry point with the fields every reply-starting frame shares."""
        follower = StreamFollower(self.send_frame, paused=True)  # learns its reply id in _started
        try:
            accepted = await start(
                self.user,
                client_id=frame.get("client_id"),
                model=engine.requested_model(frame),
                options=engine.validate_options(frame.get("temperature"), frame.get("max_tokens")),
                follower=follower,
                session_valid=self._session_check(),
                **fields,
            )
        except BaseException:
            follower.close()
            raise
        await self._started(accepted, follower)

    async def on_stop(self, frame: dict[str, Any]) -> None:
        reply_id = engine.validate_id(frame.get("reply"), "reply")
        await self._check_session()
        if not await engine.astop(self.user, reply_id):
            raise ChatError("not_found", "No such streaming reply.")

    async def on_tool_confirm(self, frame: dict[str, Any]) -> None:
        reply_id = engine.validate_id(frame.get("reply"), "reply")
        call_id = engine.validate_call_id(frame.get("call"))
        approve = frame.get("approve")
        if not isinstance(approve, bool):
            raise ChatError("invalid", "approve must be true or false.", field="approve")
        await self._check_session()
        if not await engine.aconfirm(self.user, reply_id, call_id, approve):  # type: ignore[arg-type]
            raise ChatError("not_found", "No such tool call waiting for a decision.")

    async def on_resume(self, frame: dict[str, Any]) -> None:
        reply_id = engine.validate_id(frame.get("reply"), "reply")
        offset = frame.get("offset", 0)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ChatError("invalid", "offset must be a whole number ≥ 0.", field="offset")
        await self._check_session()
        await self._follow(reply_id, offset)  # type: ignore[arg-type]

    async def on_subscribe(self, frame: dict[str, Any]) -> None:
        conversation_id = engine.validate_id(frame.get("conversation"), "conversation")
        await self._check_session()
        await db.run(store.owned_conversation, self.user.pk, conversation_id)
        await self._subscribe(conversation_id)  # type: ignore[arg-type]

    async def _subscribe(self, conversation_id: int) -> None:
        if conversation_id not in self.subscribed:
            try:
                await self.channel_layer.group_add(
                    conversation_group(conversation_id), self.channel_name
                )
            except Exception as error:  # the layer is away: other tabs' events are missed
                layer_trouble("subscribing a socket to a conversation", error)
                return
            self.subscribed.add(conversation_id)

    async def on_ping(self, frame: dict[str, Any]) -> None:
        await self._check_session()  # the page's periodic ping learns that a session ended
        await self.send_frame({"type": "pong"})

    HANDLERS = {
        "send": on_send,
        "regenerate": on_regenerate,
        "edit": on_edit,
        "stop": on_stop,
        "resume": on_resume,
        "subscribe": on_subscribe,
        "ping": on_ping,
        "tool.confirm": on_tool_confirm,
    }
    STARTS = frozenset({"send", "regenerate", "edit"})

    # -- following replies -------------------------------------------------------------------

    async def _started(self, accepted: engine.Accepted, follower: StreamFollower) -> None:
        started = accepted.started
        await self.send_frame(frames.ack(started))
        if started.new_conversation:
            await self.send_frame(
                frames.conversation_updated(started.conversation_id, started.title)
            )
        if not started.duplicate:
            await self.send_frame(frames.reply_started(started))
            self._track(started.reply_id, follower)
            follower.release(started.reply_id)
        elif accepted.reply is not None:  # the first delivery's reply runs here: it is followed
            self._track(started.reply_id, follower)
            follower.release(started.reply_id)
        else:
            follower.close()
            if started.reply_id:
                await self._follow(started.reply_id, 0)
        # Other tabs' replies in this conversation, from now on (off the first token's path).
        await self._subscribe(started.conversation_id)

    def _track(self, reply_id: int, follower: StreamFollower) -> None:
        self.following[reply_id] = follower

        def untrack() -> None:
            if self.following.get(reply_id) is follower:
                del self.following[reply_id]
            if follower.result is not None:
                self.finished_ids.add(reply_id)

        follower.on_close(untrack)

    async def _follow(self, reply_id: int, offset: int) -> None:
        """Send reply ``reply_id`` from ``offset``, then live, wherever it runs."""
        if reply_id in self.following:
            await self._resend(reply_id, offset)
            return
        follower = StreamFollower(self.send_frame, reply_id, offset=offset)
        self._track(reply_id, follower)
        try:
            await follow.afollow(self.user.pk, reply_id, follower)
        except BaseException:
            follower.close()
            raise

    async def _resend(self, reply_id: int, offset: int) -> None:
        """A client following a reply on this socket saw a gap: send its text from ``offset``."""
        follower = self.following[reply_id]
        reply = engine.local_reply(reply_id)
        if reply is not None:
            follower.discard_pending()  # what it held is part of the text sent now
            text = reply.text_from(offset)
            follower.sent["delta"] = max(follower.sent["delta"], offset + len(text))
        else:
            row = await db.run(follow.owned_reply, self.user.pk, reply_id)
            text = row.content[offset:] if row is not None else ""
        if text:
            await self.send_frame(frames.text("delta", reply_id, offset, text))

    # -- channel-layer events (conversation groups) ------------------------------------------

    async def streamchat_finished(self, event: dict[str, Any]) -> None:
        reply_id = event["reply"]
        if (
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

    async def streamchat_usage(self, event: dict[str, Any]) -> None:
        """OpenRouter's own figures for a reply that ended with estimated ones."""
        if event["conversation"] in self.subscribed:
            await self.send_frame({**event, "type": "reply.usage"})

    async def streamchat_conversation(self, event: dict[str, Any]) -> None:
        if event["conversation"] in self.subscribed:
            await self.send_frame({**event, "type": "conversation.updated"})


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
