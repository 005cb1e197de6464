"""A reply's ``Plan``: everything it needs to start, made in one database trip.

One call on an engine database thread does, in order: the session check (websocket frames), the
repeated-delivery lookup (idempotent ``client_id``), the model, the context sent upstream, the
API keys, and — in one transaction — the limit reservation and the rows (user message, streaming
reply). A refusal stores only its refusal record; a failure after admission (``busy``, a missing
conversation) rolls the reservation back with the rows. The engine opens the upstream request as
soon as this returns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError

from .. import attachments, limits, snapshots
from ..conf import DEFAULTS, app_settings
from ..exceptions import ChatError, not_found
from ..keys import KeyChoice
from ..limits.resolution import effective_limits_from
from ..models import Attachment, Message, Reservation
from ..openrouter.client import ChatRequest
from ..tools import registry as tools_registry
from . import completions, store
from .context import Context, build_context, estimate_prompt_tokens
from .events import Started
from .store import ModelChoice, NewReply, StoredReply, UnstoredExchange


@dataclass(frozen=True, slots=True)
class Options:
    """Per-request options a client may set (validated by the engine, not trusted)."""

    temperature: float | None = None
    max_tokens: int | None = None
    # More OpenRouter chat parameters, sent upstream as they are (``parameters.validate``:
    # sampling, JSON mode, tools, routing); never ``model``, ``messages``, ``stream``, ``models``.
    extra: Mapping[str, Any] = field(default_factory=dict)
    # A fallback list the client asked for (each an enabled model); None: the admin's list.
    fallback_models: tuple[str, ...] | None = None


DEFAULT_OPTIONS = Options()


# -- what is asked for ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    content: str
    conversation_id: int | None = None
    parent_id: int | None = None
    attachments: tuple[int, ...] = ()  # the user's unsent attachments (ids)


@dataclass(frozen=True, slots=True)
class Regenerate:
    reply_id: int


@dataclass(frozen=True, slots=True)
class Edit:
    message_id: int
    content: str
    # None: keep the edited message's attachments; else these ids (unsent ones, or the edited
    # message's own).
    attachments: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class Exchange:
    """An OpenAI-compatible request: its own messages, stored as a conversation when ``keep``."""

    turns: list[dict[str, Any]]
    keep: bool = False
    media_tokens: int = 0  # the estimate of its image and file parts


Ask = Send | Regenerate | Edit | Exchange


@dataclass(slots=True)
class Plan:
    """An admitted reply, ready to run."""

    user_id: Any
    source: str
    client_id: str
    choice: ModelChoice
    request: ChatRequest
    keys: list[KeyChoice]
    reservation: Reservation | None
    record: StoredReply | UnstoredExchange
    started: Started | None  # None: an API exchange that is not stored
    # The prompt's estimate (text and attachments): reserved by the limits, and recorded when
    # OpenRouter reports no usage.
    prompt_tokens: int = 0
    # The acting user (a chat reply's tools run as them; each step is admitted for them).
    user: Any = None
    # The names of the server's tools offered to the model (chat replies only; empty for the
    # OpenAI-compatible and Python APIs, whose clients run their own tools).
    tools: tuple[str, ...] = ()


def make_plan(
    user: Any,
    ask: Ask,
    *,
    client_id: str,
    model: str | None,
    options: Options,
    source: str,
    session_valid: Callable[[], bool] | None = None,
) -> Plan | Started:
    """Admit ``ask`` and store its rows; a ``Started`` (``duplicate``) for a repeated
    ``client_id``. Raises ``ChatError`` for a refusal. Sync: call it through ``db.run``."""
    if session_valid is not None and not session_valid():
        raise ChatError("auth_expired", "Your session ended: log in again.")
    if client_id:
        duplicate = store.find_duplicate(user.pk, client_id)
        if duplicate is not None:
            return _started(duplicate, client_id, duplicate.model)
    # ``assistant:<id>``: an admin's preset of a model, system prompt, temperature and tools.
    assistant = store.choose_assistant(model)
    choice = store.choose_model(assistant.model_id if assistant is not None else model)
    if assistant is not None:
        choice = assistant.applied_to(choice)
    fallback_models = (
        _enabled_fallbacks(options.fallback_models)
        if options.fallback_models is not None
        else list(choice.fallback_models)
    )
    # Validate and build the context before admitting: a bad id must not use up a request.
    context, create = _prepare(user.pk, ask, choice, options, client_id)
    messages = context.messages
    prompt_tokens = estimate_prompt_tokens(messages) + context.media_tokens
    max_tokens = reply_token_cap(options, choice)
    keys = snapshots.usable_keys.get()
    try:
        reservation, rows = limits.admit(
            user,
            model=choice.model_id,
            prompt_tokens=prompt_tokens,
            max_tokens=reserved_completion_tokens(max_tokens, choice, prompt_tokens),
            prompt_price=choice.prompt_price,
            completion_price=choice.completion_price,
            source=source,
            then=create,
            unlimited_rows=False,
            lease_seconds=float(app_settings.LEASE_SECONDS),  # renewed at checkpoints
            limits=effective_limits_from(snapshots.limit_rules.get(), user),
        )
    except IntegrityError:
        # A concurrent delivery of the same client id won the race: answer with its rows.
        duplicate = store.find_duplicate(user.pk, client_id) if client_id else None
        if duplicate is None:
            raise
        return _started(duplicate, client_id, duplicate.model)
    except limits.LimitError as refused:
        error = ChatError(refused.code, refused.message, retry_after=refused.retry_after)
        error.details = refused.details  # fits_max_tokens: what a smaller reply would need
        raise error from None
    temperature = options.temperature if options.temperature is not None else choice.temperature
    extra = (
        {**options.extra, "plugins": attachments.plugins()}
        if context.has_pdf
        else dict(options.extra)
    )
    offered = [] if isinstance(ask, Exchange) else tools_registry.offered_to(user)
    if assistant is not None:
        offered = [item for item in offered if item.name in assistant.tools]
    if offered:
        extra["tools"] = [item.spec() for item in offered]
    record = (
        StoredReply(rows.reply_id, rows.conversation_id, rows.message_id)
        if rows is not None
        else UnstoredExchange()
    )
    request = ChatRequest(
        model=choice.model_id,
        messages=messages,
        fallback_models=fallback_models,
        temperature=temperature,
        max_tokens=max_tokens,
        extra_body=extra,
        label=record.label,
    )
    return Plan(
        user_id=user.pk,
        source=source,
        client_id=client_id,
        choice=choice,
        request=request,
        keys=keys,
        reservation=reservation,
        record=record,
        started=_started(rows, client_id, choice.model_id) if rows is not None else None,
        prompt_tokens=prompt_tokens,
        user=user,
        tools=tuple(item.name for item in offered),
    )


def next_step(
    plan: Plan, step_usage: dict[str, Any], calls: list[dict[str, Any]], prompt_tokens: int
) -> Reservation:
    """Between two upstream requests of one chat reply (after a round of tool calls): store the
    step that ended (its tool calls and its own usage row, its reservation settled), then admit
    the next request with a reservation of its own. Sync: call it through ``db.run``.

    The ended step is stored first, in its own transaction, so its slot is free for the next
    (a concurrent-stream limit of 1 admits every step of a reply) and it stays stored when the
    next is refused (``ChatError``, e.g. ``rate_limited``)."""
    record = plan.record
    assert isinstance(record, StoredReply)
    record.store_step(plan.user_id, step_usage, calls)
    store.settle(plan.reservation, step_usage)
    plan.reservation = None
    choice = plan.choice
    reply_id = record.reply_id

    def link(reservation: Reservation) -> None:
        reservation.message_id = reply_id

    try:
        reservation, _ = limits.admit(
            plan.user,
            model=choice.model_id,
            prompt_tokens=prompt_tokens,
            max_tokens=reserved_completion_tokens(plan.request.max_tokens, choice, prompt_tokens),
            prompt_price=choice.prompt_price,
            completion_price=choice.completion_price,
            source=plan.source,
            then=link,
            unlimited_rows=False,
            lease_seconds=float(app_settings.LEASE_SECONDS),
            limits=effective_limits_from(snapshots.limit_rules.get(), plan.user),
        )
    except limits.LimitError as refused:
        raise ChatError(refused.code, refused.message, retry_after=refused.retry_after) from None
    plan.reservation = reservation
    plan.prompt_tokens = prompt_tokens
    return reservation


def _enabled_fallbacks(models: tuple[str, ...]) -> list[str]:
    """A client's ``models`` list: enabled models only, as for ``model`` (each may be billed)."""
    for index, model_id in enumerate(models):
        try:
            store.choose_model(model_id)
        except ChatError:
            raise ChatError(
                "invalid",
                f"models[{index}]: {model_id} is not an enabled model (GET /v1/models lists them).",
                field="models",
            ) from None
    return list(models)


def reply_token_cap(options: Options, choice: ModelChoice) -> int | None:
    """The ``max_tokens`` sent upstream: the smaller of the request's and the admin's max tokens
    (the admin's is the largest reply allowed), never above the model's own completion cap; None
    when neither is set (the reply is not cut by us)."""
    asked = [cap for cap in (options.max_tokens, choice.max_tokens) if cap]
    if not asked:
        return None
    cap = min(asked)
    if choice.max_completion_tokens:
        cap = min(cap, choice.max_completion_tokens)
    return cap


def reserved_completion_tokens(cap: int | None, choice: ModelChoice, prompt_tokens: int) -> int:
    """The completion tokens the budgets reserve for a reply (docs/limits.md): the cap sent
    upstream when there is one (the reply cannot pass it), else the smaller of the model's
    completion cap and ``RESERVE_MAX_TOKENS``; never more than the context length leaves after
    the prompt, and never a whole context window (a 128k window would refuse every send of a
    modest daily budget)."""
    if cap is None:
        known = [
            int(n) for n in (app_settings.RESERVE_MAX_TOKENS, choice.max_completion_tokens) if n
        ]
        cap = min(known) if known else DEFAULTS["RESERVE_MAX_TOKENS"]  # the setting is unset
    if choice.context_length:
        cap = min(cap, max(1, choice.context_length - prompt_tokens))
    return cap


def _started(rows: NewReply, client_id: str, model: str) -> Started:
    return Started(
        conversation_id=rows.conversation_id,
        message_id=rows.message_id,
        reply_id=rows.reply_id,
        parent_id=rows.message_id,
        model=model,
        client_id=client_id,
        duplicate=rows.duplicate,
        title=rows.title,
        new_conversation=rows.new_conversation,
    )


def _prepare(
    user_id: Any, ask: Ask, choice: ModelChoice, options: Options, client_id: str
) -> tuple[Context, Callable[[Reservation], NewReply | None]]:
    """The messages sent upstream, and the function that stores the rows (in admission's
    transaction, linking the reservation to the reply)."""
    messages, store_rows = _prepare_rows(user_id, ask, choice, options, client_id)

    def create(reservation: Reservation) -> NewReply | None:
        rows = store_rows()
        if rows is not None:
            reservation.message_id = rows.reply_id
        return rows

    return messages, create


def _prepare_rows(
    user_id: Any, ask: Ask, choice: ModelChoice, options: Options, client_id: str
) -> tuple[Context, Callable[[], NewReply | None]]:
    cap = reply_token_cap(options, choice)
    if isinstance(ask, Send):
        branch: list[Message] = []
        conversation_id, parent_id = ask.conversation_id, ask.parent_id
        if conversation_id is not None:
            conversation = store.owned_conversation(user_id, conversation_id)
            parent: Message | None
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
        question = _question(ask.content)
        own = _unsent(user_id, ask.attachments, choice)
        files = {**_attachments_of(branch), None: own}
        context = build_context([*branch, question], choice, cap, files)
        return context, lambda: store.create_reply_rows(
            user_id=user_id,
            model_id=choice.model_id,
            client_id=client_id,
            conversation_id=conversation_id,
            content=ask.content,
            parent_id=parent_id,
            attachment_ids=[a.pk for a in own],
        )
    if isinstance(ask, Regenerate):
        reply = store.owned_message(user_id, ask.reply_id, role=Message.Role.ASSISTANT)
        answered = reply.parent
        if answered is None:
            raise ChatError("not_found", "No such message.")
        branch = store.path_to(answered)
        files = _attachments_of(branch)
        _check_readable(files.get(answered.pk, ()), choice)  # the question's own files
        return build_context(branch, choice, cap, files), lambda: store.create_reply_rows(
            user_id=user_id, model_id=choice.model_id, client_id=client_id, question_id=answered.pk
        )
    if isinstance(ask, Edit):
        original = store.owned_message(user_id, ask.message_id, role=Message.Role.USER)
        branch = store.path_to(original.parent) if original.parent is not None else []
        question = _question(ask.content)
        claimed, copies = _edited_attachments(user_id, original, ask.attachments, choice)
        files = {**_attachments_of(branch), None: [*claimed, *copies]}
        context = build_context([*branch, question], choice, cap, files)
        return context, lambda: store.create_reply_rows(
            user_id=user_id,
            model_id=choice.model_id,
            client_id=client_id,
            conversation_id=original.conversation_id,
            content=ask.content,
            parent_id=original.parent_id,
            attachment_ids=[a.pk for a in claimed],
            attachment_copies=copies,
        )
    completions.check_readable(ask.turns, choice)
    messages = completions.upstream_messages(ask.turns, choice)
    context = Context(messages, ask.media_tokens, completions.has_file_parts(ask.turns))
    if not ask.keep:
        return context, lambda: None
    stored = completions.stored_turns(ask.turns)
    return context, lambda: store.create_exchange_rows(user_id, choice.model_id, stored)


def _attachments_of(branch: list[Message]) -> dict[int | None, list[Attachment]]:
    """The attachments of the branch's user messages, by message id (one query)."""
    asked = [m.pk for m in branch if m.role == Message.Role.USER and m.pk is not None]
    found: dict[int | None, list[Attachment]] = {}
    if asked:
        for row in Attachment.objects.filter(message_id__in=asked).order_by("id"):
            found.setdefault(row.message_id, []).append(row)
    return found


def _owned_attachments(user_id: Any, ids: tuple[int, ...]) -> list[Attachment]:
    """The user's attachments ``ids`` in their order; another user's id is ``not_found``, as a
    missing one."""
    rows = {a.pk: a for a in Attachment.objects.filter(owner_id=user_id, pk__in=ids)}
    if len(rows) != len(set(ids)):
        raise not_found("attachment")
    return [rows[pk] for pk in dict.fromkeys(ids)]


def _unsent(user_id: Any, ids: tuple[int, ...], choice: ModelChoice) -> list[Attachment]:
    if not ids:
        return []
    rows = _owned_attachments(user_id, ids)
    if any(row.message_id is not None for row in rows):
        raise not_found("attachment")  # sent with another message: not this one's to take
    _check_readable(rows, choice)
    return rows


def _edited_attachments(
    user_id: Any, original: Message, ids: tuple[int, ...] | None, choice: ModelChoice
) -> tuple[list[Attachment], list[Attachment]]:
    """An edit's attachments: (unsent ones it takes, the edited message's ones it keeps)."""
    if ids is None:
        kept = list(Attachment.objects.filter(message=original).order_by("id"))
        _check_readable(kept, choice)
        return [], kept
    rows = _owned_attachments(user_id, ids)
    if any(row.message_id not in (None, original.pk) for row in rows):
        raise not_found("attachment")
    _check_readable(rows, choice)
    return [r for r in rows if r.message_id is None], [r for r in rows if r.message_id]


def _check_readable(rows: Any, choice: ModelChoice) -> None:
    for row in rows:
        if not attachments.readable_by(row.content_type, choice.input_modalities):
            raise attachments.cannot_read(row.content_type, choice.model_id)


def _question(content: str) -> Message:
    return Message(role=Message.Role.USER, content=content, status=Message.Status.COMPLETE)
