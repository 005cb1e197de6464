"""The reply engine's entry points: send, regenerate, edit, complete (API), stop.

Every front end (the websocket consumer, the SSE views, the OpenAI-compatible views) calls these;
none of them talks to OpenRouter or writes reply rows itself. A start is: validate (no database),
check this process's capacity (``MAX_ACTIVE_REPLIES``), make the ``Plan`` in one database trip
(``plan.make_plan``: admission, rows, keys), then launch the reply at once. A refused send stores
nothing but the refusal record. Front ends get a ``Reply`` handle and ``Started`` event back; to
show the reply they pass a follower (``follow.StreamFollower``), which sees it from the first delta.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import DatabaseError

from .. import attachments
from ..conf import app_settings
from ..exceptions import ChatError, other_workers_unreachable, unavailable
from ..keys import KeyChoice
from ..models import Message, Usage
from ..text import clean_text
from . import completions, db, layer
from .events import Follower, Started
from .hub import control_group, conversation_group, get_hub
from .plan import DEFAULT_OPTIONS, Ask, Edit, Exchange, Options, Plan, Regenerate, Send, make_plan
from .reply import Reply, ReplyRun

__all__ = [
    "Accepted",
    "Options",
    "aconfirm",
    "aedit",
    "acomplete_messages",
    "aregenerate",
    "asend",
    "astop",
    "local_reply",
]

logger = logging.getLogger("streamchat.streaming")

MAX_CLIENT_ID = 64


@dataclass(frozen=True, slots=True)
class Accepted:
    """A reply that was started, or found again for a repeated client id (``started.duplicate``).

    ``reply`` is its handle while it runs in this process; None for a repeated delivery whose reply
    ended or runs in another worker (follow it with ``follow.afollow``).
    """

    started: Started
    reply: Reply | None


def validate_client_id(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_CLIENT_ID:
        raise ChatError(
            "invalid",
            f"client_id must be a string of 1 to {MAX_CLIENT_ID} characters.",
            field="client_id",
        )
    return value


def validate_content(value: Any, *, may_be_empty: bool = False) -> str:
    """``may_be_empty``: a message with attachments needs no text."""
    if not isinstance(value, str):
        raise ChatError("invalid", "content must be a string.", field="content")
    content = clean_text(value)
    if not content.strip() and not may_be_empty:
        raise ChatError("invalid", "The message is empty.", field="content")
    if len(content) > app_settings.MAX_MESSAGE_CHARS:
        raise ChatError(
            "message_too_large",
            f"The message is longer than {app_settings.MAX_MESSAGE_CHARS} characters.",
            field="content",
        )
    return content


def validate_options(temperature: Any = None, max_tokens: Any = None) -> Options:
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature <= 2
    ):
        raise ChatError("invalid", "temperature must be a number from 0 to 2.", field="temperature")
    if max_tokens is not None and (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or not 1 <= max_tokens <= 1_000_000
    ):
        raise ChatError(
            "invalid", "max_tokens must be a whole number from 1 to 1000000.", field="max_tokens"
        )
    return Options(float(temperature) if temperature is not None else None, max_tokens)


def validate_attachments(value: Any) -> tuple[int, ...] | None:
    """A frame's ``attachments``: a list of ids, at most ``ATTACHMENTS_PER_MESSAGE`` (None: not
    given). Whose they are is checked in the plan's trip."""
    if value is None:
        return None
    if not isinstance(value, list) or any(
        isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value
    ):
        raise ChatError("invalid", "attachments must be a list of ids.", field="attachments")
    if len(set(value)) > app_settings.ATTACHMENTS_PER_MESSAGE:
        raise attachments.too_many()
    return tuple(dict.fromkeys(value))


def validate_id(value: Any, field: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ChatError("invalid", f"{field} must be an id.", field=field)
    return value


def requested_model(frame: dict[str, Any]) -> Any:
    """The model a reply-starting frame asks for: ``assistant`` (an assistant's id) wins over
    ``model`` (a model id, or the picker's ``assistant:<id>``)."""
    if frame.get("assistant") is not None:
        return f"assistant:{validate_id(frame.get('assistant'), 'assistant')}"
    return frame.get("model")


async def asend(
    user: Any,
    *,
    client_id: str,
    content: str,
    conversation_id: int | None = None,
    parent_id: int | None = None,
    attachments: Any = None,
    model: str | None = None,
    options: Options = DEFAULT_OPTIONS,
    source: str = Usage.Source.WEBSOCKET,
    follower: Follower | None = None,
    session_valid: Callable[[], bool] | None = None,
) -> Accepted:
    """Store a user message and start its reply (``follower`` sees it from the first delta).

    ``attachments``: ids of the user's unsent uploads, sent with the message.
    ``session_valid`` (run in the same database trip) lets a front end re-check its session."""
    client_id = validate_client_id(client_id)
    files = validate_attachments(attachments) or ()
    content = validate_content(content, may_be_empty=bool(files))
    return await _start(
        user,
        Send(content, conversation_id, parent_id, files),
        client_id=client_id,
        model=model,
        options=options,
        source=source,
        follower=follower,
        session_valid=session_valid,
    )


async def aregenerate(
    user: Any,
    *,
    reply_id: int,
    client_id: str,
    model: str | None = None,
    options: Options = DEFAULT_OPTIONS,
    source: str = Usage.Source.WEBSOCKET,
    follower: Follower | None = None,
    session_valid: Callable[[], bool] | None = None,
) -> Accepted:
    """A new reply to the question ``reply_id`` answered; the earlier reply stays as a sibling."""
    client_id = validate_client_id(client_id)
    return await _start(
        user,
        Regenerate(reply_id),
        client_id=client_id,
        model=model,
        options=options,
        source=source,
        follower=follower,
        session_valid=session_valid,
    )


async def aedit(
    user: Any,
    *,
    message_id: int,
    content: str,
    client_id: str,
    attachments: Any = None,
    model: str | None = None,
    options: Options = DEFAULT_OPTIONS,
    source: str = Usage.Source.WEBSOCKET,
    follower: Follower | None = None,
    session_valid: Callable[[], bool] | None = None,
) -> Accepted:
    """A new version of user message ``message_id`` (a sibling) and a reply to it.

    ``attachments``: None keeps the edited message's; a list names them (unsent uploads, or the
    edited message's own)."""
    client_id = validate_client_id(client_id)
    files = validate_attachments(attachments)
    content = validate_content(content, may_be_empty=bool(files))
    return await _start(
        user,
        Edit(message_id, content, files),
        client_id=client_id,
        model=model,
        options=options,
        source=source,
        follower=follower,
        session_valid=session_valid,
    )


async def acomplete_messages(
    user: Any,
    *,
    messages: Any,
    model: Any,
    options: Options = DEFAULT_OPTIONS,
    source: str = Usage.Source.API,
    keep: bool | None = None,
    follower: Follower | None = None,
    keys: list[KeyChoice] | None = None,
) -> Reply:
    """A reply to ``messages`` the request carries itself (the OpenAI-compatible and Python APIs).

    The same admission as a chat message: an enabled model only (None: the default one), the
    user's limits and budgets (reserved before the call, settled when it ends), the keys with
    failover, one Usage row. ``keep`` (default: the ``API_STORE_CONVERSATIONS`` setting) also
    stores the exchange as a conversation; otherwise the reply has no Message row. ``follower``
    sees it from the first delta. ``keys`` replaces the site's keys for this reply (the Python
    API's ``api_key=``); the limits and the ledger still apply.
    """
    if completions.has_media(messages):
        # Decoding and checking images and PDFs (Pillow, pypdf) blocks: not on the event loop.
        checked = await sync_to_async(completions.validate_turns, thread_sensitive=False)(messages)
    else:
        checked = completions.validate_turns(messages)
    turns = checked.turns
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise ChatError("invalid", "model must be a model id.", field="model")
    if keep is None:
        keep = bool(app_settings.API_STORE_CONVERSATIONS)
    accepted = await _start(
        user,
        Exchange(turns, keep, checked.media_tokens),
        client_id="",
        model=model,
        options=options,
        source=source,
        follower=follower,
        keys=keys,
    )
    assert accepted.reply is not None
    return accepted.reply


async def astop(user: Any, reply_id: int) -> bool:
    """Stop a streaming reply of ``user``'s, in this worker or another. False if it is not theirs
    or not streaming."""
    run = get_hub().runs.get(reply_id)
    if run is not None and run.user_id == user.pk and not run.done.is_set():
        run.stop()
        return True
    return await _tell_other_worker(
        user, reply_id, {"type": "streamchat.stop", "reply": reply_id}, "a stop"
    )


def validate_call_id(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 100:
        raise ChatError("invalid", "call must be a tool call id.", field="call")
    return value


async def aconfirm(user: Any, reply_id: int, call_id: str, approve: bool) -> bool:
    """The user's decision on a tool call that waits for it (``tool.confirm``), in this worker or
    another. False if the reply is not theirs or not streaming, or (in this worker) no such call
    waits."""
    run = get_hub().runs.get(reply_id)
    if run is not None and run.user_id == user.pk and not run.done.is_set():
        return run.decide(call_id, approve)
    message = {"type": "streamchat.confirm", "reply": reply_id, "call": call_id, "approve": approve}
    return await _tell_other_worker(user, reply_id, message, "a tool decision")


async def _tell_other_worker(user: Any, reply_id: int, message: dict[str, Any], what: str) -> bool:
    """Send ``message`` to the worker running ``user``'s reply (through its control group, see
    ``hub``). False if the reply is not theirs or not streaming."""
    if not await db.run(_is_streaming_reply, user.pk, reply_id):
        return False
    try:
        await get_channel_layer().group_send(control_group(reply_id), message)
    except Exception as error:
        layer.trouble(f"sending {what} to another worker", error)
        raise other_workers_unreachable() from None
    return True


def local_reply(reply_id: int) -> Reply | None:
    """The handle of reply ``reply_id`` if it runs in this process."""
    run = get_hub().runs.get(reply_id)
    return Reply(run) if run is not None else None


# -- internals ---------------------------------------------------------------------------------


async def _start(
    user: Any,
    ask: Ask,
    *,
    client_id: str,
    model: str | None,
    options: Options,
    source: str,
    follower: Follower | None,
    session_valid: Callable[[], bool] | None = None,
    keys: list[KeyChoice] | None = None,
) -> Accepted:
    if model is not None and (not isinstance(model, str) or len(model) > 200):
        raise ChatError("invalid", "model must be a model id.", field="model")
    hub = get_hub()
    if hub.draining:
        raise ChatError(
            "server_restarting",
            "This server is restarting: your message was not sent. Send it again.",
            retry_after=1,
        )
    limit = app_settings.MAX_ACTIVE_REPLIES
    if limit is not None and hub.active + hub.admitting >= limit:
        raise ChatError(
            "overloaded",
            "The server is busy: too many replies are running. Try again in a moment.",
            retry_after=app_settings.OVERLOADED_RETRY_AFTER,
        )
    # Admission runs to its end even if the caller is cancelled meanwhile (a socket closed, a
    # worker shutting down): rows it commits always get their reply.
    task = hub.spawn(
        _admit_and_launch(
            hub,
            user,
            ask,
            client_id=client_id,
            model=model,
            options=options,
            source=source,
            follower=follower,
            session_valid=session_valid,
            keys=keys,
        )
    )
    hub.admitting += 1  # until it is launched (or refused): counted once, never twice
    task.add_done_callback(_retrieve)
    return await asyncio.shield(task)


def _retrieve(task: asyncio.Task[Accepted]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a refusal nobody waits for any more is no error


async def _admit_and_launch(
    hub: Any,
    user: Any,
    ask: Ask,
    *,
    client_id: str,
    model: str | None,
    options: Options,
    source: str,
    follower: Follower | None,
    session_valid: Callable[[], bool] | None,
    keys: list[KeyChoice] | None = None,
) -> Accepted:
    try:
        try:
            plan = await db.run(
                make_plan,
                user,
                ask,
                client_id=client_id,
                model=model,
                options=options,
                source=source,
                session_valid=session_valid,
            )
        except DatabaseError as error:
            logger.warning("streamchat: a send was refused: the database failed (%s)", error)
            raise unavailable() from None
        if isinstance(plan, Started):
            return _again(plan, follower)
        if keys is not None:
            plan.keys = keys
        reply = launch(plan, follower)  # counted in hub.active from here
    finally:
        hub.admitting -= 1
    if plan.started is not None:
        hub.spawn(_announce(plan.started))
        return Accepted(plan.started, reply)
    return Accepted(Started(0, 0, 0, None, plan.choice.model_id, client_id), reply)


def launch(plan: Plan, follower: Follower | None = None) -> Reply:
    """Run an admitted ``plan`` in this process; ``follower`` sees it from the first delta."""
    run = ReplyRun(get_hub(), plan)
    if follower is not None:
        run.follow(follower)
    run.start()
    return Reply(run)


def _again(started: Started, follower: Follower | None) -> Accepted:
    run = get_hub().runs.get(started.reply_id)
    if run is not None and follower is not None:
        run.follow(follower)
    return Accepted(started, Reply(run) if run is not None else None)


async def _announce(started: Started) -> None:
    """Tell other tabs on this conversation (any worker): a reply started."""
    try:
        await get_channel_layer().group_send(
            conversation_group(started.conversation_id),
            {
                "type": "streamchat.started",
                "conversation": started.conversation_id,
                "reply": started.reply_id,
                "parent": started.parent_id,
                "model": started.model,
                "client_id": started.client_id,
            },
        )
    except Exception as error:  # other tabs see it on their next load
        layer.trouble("announcing a reply to other tabs", error)


def _is_streaming_reply(user_id: Any, reply_id: Any) -> bool:
    try:
        return Message.objects.filter(
            pk=int(reply_id),
            conversation__owner_id=user_id,
            role=Message.Role.ASSISTANT,
            status=Message.Status.STREAMING,
        ).exists()
    except (TypeError, ValueError, OverflowError):
        return False
