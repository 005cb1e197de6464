"""The reply engine's entry points: send, regenerate, edit, stop, follow, complete.

Every front end (the websocket consumer, the SSE views and the OpenAI-compatible views) calls
these; none of them talks to OpenRouter or writes reply rows itself. Order of a send: validate,
find a repeated client id (answer with the existing rows), admit against the user's limits, store
the rows, start the run. A refused send stores nothing but the refusal record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from ..conf import app_settings
from ..exceptions import ChatError
from ..models import Message, Usage
from ..openrouter.client import ChatRequest
from ..text import clean_text
from . import completions, store
from .context import build_messages, estimate_prompt_tokens
from .hub import Follower, control_group, conversation_group, get_hub
from .run import Origin, ReplyRun
from .store import ModelChoice, NewReply

MAX_CLIENT_ID = 64


@dataclass(frozen=True, slots=True)
class Options:
    """Per-request options a client may set (validated here, not trusted)."""

    temperature: float | None = None
    max_tokens: int | None = None


@dataclass(slots=True)
class Accepted:
    """A reply that was started (or found again for a repeated client id)."""

    conversation_id: int
    message_id: int
    reply_id: int
    parent_id: int | None
    model: str
    client_id: str
    duplicate: bool
    title: str
    new_conversation: bool
    run: ReplyRun | None


def validate_client_id(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_CLIENT_ID:
        raise ChatError(
            "invalid",
            f"client_id must be a string of 1 to {MAX_CLIENT_ID} characters.",
            field="client_id",
        )
    return value


def validate_content(value: Any) -> str:
    if not isinstance(value, str):
        raise ChatError("invalid", "content must be a string.", field="content")
    content = clean_text(value)
    if not content.strip():
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


def reply_token_cap(options: Options, choice: ModelChoice, prompt_tokens: int) -> int | None:
    """The most tokens a reply may have: asked for, else the model's setting, else what the
    context length leaves after the prompt. It is sent upstream, so the budget reserved for it
    holds; None (no cap known) reserves ``RESERVE_MAX_TOKENS``."""
    cap = options.max_tokens or choice.max_tokens
    if cap is None and choice.context_length:
        cap = max(1, choice.context_length - prompt_tokens)
    return cap


def validate_id(value: Any, field: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ChatError("invalid", f"{field} must be an id.", field=field)
    return value


async def asend(
    user: Any,
    *,
    client_id: str,
    content: str,
    conversation_id: int | None = None,
    parent_id: int | None = None,
    model: str | None = None,
    options: Options = Options(),
    source: str = Usage.Source.WEBSOCKET,
    follower: Follower | None = None,
) -> Accepted:
    """Store a user message and start its reply (``follower`` sees it from the first delta)."""
    client_id = validate_client_id(client_id)
    content = validate_content(content)
    return await _start(
        user,
        client_id=client_id,
        model=model,
        options=options,
        source=source,
        follower=follower,
        prepare=lambda choice: _prepare_send(
            user.pk, choice, options, client_id, conversation_id, parent_id, content
        ),
    )


async def aregenerate(
    user: Any,
    *,
    reply_id: int,
    client_id: str,
    model: str | None = None,
    options: Options = Options(),
    source: str = Usage.Source.WEBSOCKET,
    follower: Follower | None = None,
) -> Accepted:
    """A new reply to the question ``reply_id`` answered; the earlier reply stays as a sibling."""
    client_id = validate_client_id(client_id)
    return await _start(
        user,
        client_id=client_id,
        model=model,
        options=options,
        source=source,
        follower=follower,
        prepare=lambda choice: _prepare_regenerate(user.pk, choice, options, client_id, reply_id),
    )


async def aedit(
    user: Any,
    *,
    message_id: int,
    content: str,
    client_id: str,
    model: str | None = None,
    options: Options = Options(),
    source: str = Usage.Source.WEBSOCKET,
    follower: Follower | None = None,
) -> Accepted:
    """A new version of user message ``message_id`` (a sibling) and a reply to it."""
    client_id = validate_client_id(client_id)
    content = validate_content(content)
    return await _start(
        user,
        client_id=client_id,
        model=model,
        options=options,
        source=source,
        follower=follower,
        prepare=lambda choice: _prepare_edit(
            user.pk, choice, options, client_id, message_id, content
        ),
    )


async def astop(user: Any, reply_id: int) -> bool:
    """Stop a streaming reply of ``user``'s, in this worker or another. False if it is not theirs
    or not streaming."""
    reply = await database_sync_to_async(_streaming_reply)(user.pk, reply_id)
    if reply is None:
        return False
    run = get_hub().runs.get(reply_id)
    if run is not None:
        run.stop()
    else:
        await get_channel_layer().group_send(
            control_group(reply_id), {"type": "streamchat.stop", "reply": reply_id}
        )
    return True


def local_run(reply_id: int) -> ReplyRun | None:
    return get_hub().runs.get(reply_id)


async def acomplete_messages(
    user: Any,
    *,
    messages: Any,
    model: Any,
    options: Options = Options(),
    source: str = Usage.Source.API,
    keep: bool | None = None,
    follower: Follower | None = None,
) -> ReplyRun:
    """A reply to ``messages`` the request carries itself (the OpenAI-compatible API).

    The same admission as a chat message: an enabled model only, the user's limits and budgets
    (reserved before the call, settled when it ends), the keys with failover, one Usage row.
    ``keep`` (default: the ``API_STORE_CONVERSATIONS`` setting) also stores the exchange as a
    conversation; otherwise the run has no Message row. Returns the started run; ``follower``
    sees it from the first delta.
    """
    turns = completions.validate_messages(messages)
    if not isinstance(model, str) or not model.strip() or len(model) > 200:
        raise ChatError("invalid", "model must be a model id.", field="model")
    choice: ModelChoice = await database_sync_to_async(store.choose_model)(model)
    upstream = completions.upstream_messages(turns, choice)
    max_tokens = reply_token_cap(options, choice, estimate_prompt_tokens(upstream))
    reservation = await _reserve(user, choice, upstream, max_tokens, source)
    if keep is None:
        keep = bool(app_settings.API_STORE_CONVERSATIONS)
    rows: NewReply | None = None
    if keep:
        try:
            rows = await database_sync_to_async(store.create_exchange_rows)(
                user.pk, choice.model_id, turns
            )
        except BaseException:
            await _release(reservation)
            raise
    temperature = options.temperature if options.temperature is not None else choice.temperature
    run = ReplyRun(
        hub=get_hub(),
        reply_id=rows.reply_id if rows else None,
        parent_id=rows.message_id if rows else None,
        origin=Origin(
            user_id=user.pk,
            conversation_id=rows.conversation_id if rows else None,
            source=source,
        ),
        model=choice,
        request=ChatRequest(
            model=choice.model_id,
            messages=upstream,
            fallback_models=list(choice.fallback_models),
            temperature=temperature,
            max_tokens=max_tokens,
        ),
        reservation=reservation,
    )
    if follower is not None:
        run.follow(follower)
    run.start()
    return run


# -- internals ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Prepared:
    rows: NewReply
    messages: list[dict[str, Any]]


async def _start(
    user: Any,
    *,
    client_id: str,
    model: str | None,
    options: Options,
    source: str,
    follower: Follower | None,
    prepare: Any,
) -> Accepted:
    duplicate = await database_sync_to_async(store.find_duplicate)(user.pk, client_id)
    if duplicate is not None:
        return await _accepted_again(duplicate, client_id, follower)
    if model is not None and (not isinstance(model, str) or len(model) > 200):
        raise ChatError("invalid", "model must be a model id.", field="model")
    choice: ModelChoice = await database_sync_to_async(store.choose_model)(model)
    # Validate and build the context before admitting: a bad id must not use up a request.
    plan = await database_sync_to_async(prepare)(choice)
    messages = plan["messages"]
    max_tokens = reply_token_cap(options, choice, estimate_prompt_tokens(messages))
    reservation = await _reserve(user, choice, messages, max_tokens, source)
    try:
        rows: NewReply = await database_sync_to_async(plan["create"])()
    except BaseException:
        await _release(reservation)
        raise
    if rows.duplicate:
        await _release(reservation)
        return await _accepted_again(rows, client_id, follower)
    temperature = options.temperature if options.temperature is not None else choice.temperature
    request = ChatRequest(
        model=choice.model_id,
        messages=messages,
        fallback_models=list(choice.fallback_models),
        temperature=temperature,
        max_tokens=max_tokens,
    )
    hub = get_hub()
    run = ReplyRun(
        hub=hub,
        reply_id=rows.reply_id,
        parent_id=rows.message_id,
        origin=Origin(
            user_id=user.pk,
            conversation_id=rows.conversation_id,
            source=source,
            client_id=client_id,
        ),
        model=choice,
        request=request,
        reservation=reservation,
    )
    if follower is not None:
        run.follow(follower)
    run.start()
    accepted = Accepted(
        conversation_id=rows.conversation_id,
        message_id=rows.message_id,
        reply_id=rows.reply_id,
        parent_id=rows.message_id,
        model=choice.model_id,
        client_id=client_id,
        duplicate=False,
        title=rows.title,
        new_conversation=rows.new_conversation,
        run=run,
    )
    await _announce(accepted)
    return accepted


async def _accepted_again(rows: NewReply, client_id: str, follower: Follower | None) -> Accepted:
    run = local_run(rows.reply_id)
    if run is not None and follower is not None:
        run.follow(follower)
    reply_model = await database_sync_to_async(
        lambda: (
            Message.objects.filter(pk=rows.reply_id).values_list("model", flat=True).first() or ""
        )
    )()
    return Accepted(
        conversation_id=rows.conversation_id,
        message_id=rows.message_id,
        reply_id=rows.reply_id,
        parent_id=rows.message_id,
        model=reply_model,
        client_id=client_id,
        duplicate=True,
        title=rows.title,
        new_conversation=False,
        run=run,
    )


async def _announce(accepted: Accepted) -> None:
    """Tell other tabs on this conversation (any worker): a reply started, maybe a new title."""
    layer = get_channel_layer()
    group = conversation_group(accepted.conversation_id)
    await layer.group_send(
        group,
        {
            "type": "streamchat.started",
            "conversation": accepted.conversation_id,
            "reply": accepted.reply_id,
            "parent": accepted.parent_id,
            "model": accepted.model,
            "client_id": accepted.client_id,
        },
    )


def _prepare_send(
    user_id: int,
    choice: ModelChoice,
    options: Options,
    client_id: str,
    conversation_id: int | None,
    parent_id: int | None,
    content: str,
) -> dict[str, Any]:
    branch: list[Message] = []
    if conversation_id is not None:
        conversation = store.owned_conversation(user_id, conversation_id)
        if parent_id is not None:
            parent = store.owned_message(user_id, parent_id)
            if parent.conversation_id != conversation.pk:
                raise ChatError("not_found", "No such message.")
        else:
            parent = conversation.messages.order_by("-id").first()
        branch = store.path_to(parent) if parent is not None else []
        parent_id = parent.pk if parent is not None else None
    elif parent_id is not None:
        raise ChatError("invalid", "parent needs its conversation.", field="parent")
    question = Message(role=Message.Role.USER, content=content, status=Message.Status.COMPLETE)
    messages = build_messages([*branch, question], choice, options.max_tokens or choice.max_tokens)

    def create() -> NewReply:
        return store.create_reply_rows(
            user_id=user_id,
            model_id=choice.model_id,
            client_id=client_id,
            conversation_id=conversation_id,
            content=content,
            parent_id=parent_id,
        )

    return {"messages": messages, "create": create}


def _prepare_regenerate(
    user_id: int, choice: ModelChoice, options: Options, client_id: str, reply_id: int
) -> dict[str, Any]:
    reply = store.owned_message(user_id, reply_id, role=Message.Role.ASSISTANT)
    question = reply.parent
    if question is None:
        raise ChatError("not_found", "No such message.")
    messages = build_messages(
        store.path_to(question), choice, options.max_tokens or choice.max_tokens
    )

    def create() -> NewReply:
        return store.create_reply_rows(
            user_id=user_id, model_id=choice.model_id, client_id=client_id, question_id=question.pk
        )

    return {"messages": messages, "create": create}


def _prepare_edit(
    user_id: int,
    choice: ModelChoice,
    options: Options,
    client_id: str,
    message_id: int,
    content: str,
) -> dict[str, Any]:
    original = store.owned_message(user_id, message_id, role=Message.Role.USER)
    parent = original.parent
    branch = store.path_to(parent) if parent is not None else []
    question = Message(role=Message.Role.USER, content=content, status=Message.Status.COMPLETE)
    messages = build_messages([*branch, question], choice, options.max_tokens or choice.max_tokens)

    def create() -> NewReply:
        return store.create_reply_rows(
            user_id=user_id,
            model_id=choice.model_id,
            client_id=client_id,
            conversation_id=original.conversation_id,
            content=content,
            parent_id=original.parent_id,
        )

    return {"messages": messages, "create": create}


def _streaming_reply(user_id: int, reply_id: Any) -> Message | None:
    try:
        return Message.objects.filter(
            pk=int(reply_id),
            conversation__owner_id=user_id,
            role=Message.Role.ASSISTANT,
            status=Message.Status.STREAMING,
        ).first()
    except (TypeError, ValueError, OverflowError):
        return None


async def _reserve(
    user: Any,
    choice: ModelChoice,
    messages: list[dict[str, Any]],
    max_tokens: int | None,
    source: str,
) -> Any:
    from .. import limits

    try:
        return await limits.areserve(
            user,
            model=choice.model_id,
            prompt_tokens=estimate_prompt_tokens(messages),
            max_tokens=max_tokens or app_settings.RESERVE_MAX_TOKENS,
            prompt_price=choice.prompt_price,
            completion_price=choice.completion_price,
            source=source,
        )
    except limits.LimitError as refused:
        raise ChatError(refused.code, refused.message, retry_after=refused.retry_after) from None


async def _release(reservation: Any) -> None:
    if reservation is None:
        return
    from .. import limits

    await limits.arelease(reservation)
