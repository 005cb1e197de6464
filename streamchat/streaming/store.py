"""The reply engine's database work: every ORM call of a reply, as plain sync functions.

The engine calls them through ``database_sync_to_async``. A reply touches the database a bounded
number of times: rows created at the start, a checkpoint every ``CHECKPOINT_MS`` while it streams
(never per token), one final write with its Usage row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone

from .. import limits, pricing, signals, snapshots
from ..conf import app_settings
from ..exceptions import ChatError, not_found
from ..keys import KeyChoice, record_key_used
from ..models import Attachment, Conversation, Message, Reservation, Usage
from .events import UsageFigures

logger = logging.getLogger("streamchat.streaming")

TITLE_CHARS = 60
# What an edit's copy of an attachment shares with the original (the file among them).
ATTACHMENT_COPIED_FIELDS = (
    "storage_name",
    "filename",
    "content_type",
    "size",
    "sha256",
    "width",
    "height",
    "pages",
)


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """The model a reply uses, with what admins configured for it."""

    model_id: str
    system_prompt: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    fallback_models: tuple[str, ...] = ()
    context_length: int | None = None
    max_completion_tokens: int | None = None  # the provider's cap on a reply (/models)
    input_modalities: tuple[str, ...] = ()  # what it reads (/models); none listed: text only
    prompt_price: Decimal | None = None
    completion_price: Decimal | None = None

    def cost_for(self, prompt_tokens: int, completion_tokens: int) -> Decimal | None:
        return pricing.cost(
            prompt_tokens, completion_tokens, self.prompt_price, self.completion_price
        )


@dataclass(frozen=True, slots=True)
class AssistantChoice:
    """An assistant a user picked (``assistant:<id>`` in place of a model id): its model with
    its own system prompt, temperature and tools."""

    PREFIX = "assistant:"

    id: int
    name: str
    model_id: str
    system_prompt: str = ""
    temperature: float | None = None
    tools: frozenset[str] = frozenset()

    @classmethod
    def of(cls, row: Any) -> AssistantChoice:
        return cls(
            id=row.pk,
            name=row.name,
            model_id=row.model,
            system_prompt=row.system_prompt,
            temperature=float(row.temperature) if row.temperature is not None else None,
            tools=frozenset(tool.name for tool in row.tools.all()),
        )

    def applied_to(self, choice: ModelChoice) -> ModelChoice:
        return replace(
            choice,
            system_prompt=self.system_prompt or choice.system_prompt,
            temperature=self.temperature if self.temperature is not None else choice.temperature,
        )


def choose_assistant(requested: str | None) -> AssistantChoice | None:
    """The enabled assistant ``requested`` names (``assistant:<id>``); None for a model id.
    (From this process's snapshot, as the models.)"""
    if not requested or not requested.startswith(AssistantChoice.PREFIX):
        return None
    try:
        pk = int(requested[len(AssistantChoice.PREFIX) :])
    except ValueError:
        pk = None
    found = snapshots.enabled_assistants.get().get(pk) if pk is not None else None
    if found is None:
        raise ChatError("model_unavailable", "This assistant is not available.", field="model")
    return found


@dataclass(frozen=True, slots=True)
class NewReply:
    """What ``create_reply_rows`` stored (or found again, for a repeated client id)."""

    conversation_id: int
    message_id: int
    reply_id: int
    parent_id: int | None
    duplicate: bool
    title: str
    new_conversation: bool
    model: str = ""  # the reply's model (known for a repeated delivery)


def choose_model(requested: str | None) -> ModelChoice:
    """The enabled model asked for, else the default one; ``model_unavailable`` otherwise.
    (The enabled models come from this process's snapshot: ``streamchat.snapshots``.)"""
    enabled = snapshots.enabled_models.get()  # ordered: the default first
    if requested:
        row = next((m for m in enabled if m.model_id == requested), None)
        if row is None:
            if not enabled and requested == app_settings.DEFAULT_MODEL:
                return ModelChoice(model_id=requested)
            raise ChatError("model_unavailable", "This model is not available.", field="model")
    else:
        row = enabled[0] if enabled else None
        if row is None:
            return ModelChoice(model_id=app_settings.DEFAULT_MODEL)
    return ModelChoice(
        model_id=row.model_id,
        system_prompt=row.system_prompt,
        temperature=float(row.default_temperature) if row.default_temperature is not None else None,
        max_tokens=row.max_tokens,
        fallback_models=tuple(m for m in row.fallback_models or () if isinstance(m, str)),
        context_length=row.context_length,
        max_completion_tokens=row.max_completion_tokens,
        input_modalities=tuple(m for m in row.input_modalities or () if isinstance(m, str)),
        prompt_price=row.prompt_price,
        completion_price=row.completion_price,
    )


def owned_conversation(user_id: int, conversation_id: Any) -> Conversation:
    try:
        return Conversation.objects.get(pk=int(conversation_id), owner_id=user_id)
    except (Conversation.DoesNotExist, TypeError, ValueError, OverflowError):
        raise not_found("conversation") from None


def owned_message(user_id: int, message_id: Any, role: str | None = None) -> Message:
    query = Message.objects.select_related("conversation").filter(conversation__owner_id=user_id)
    if role:
        query = query.filter(role=role)
    try:
        return query.get(pk=int(message_id))
    except (Message.DoesNotExist, TypeError, ValueError, OverflowError):
        raise not_found("message") from None


def find_duplicate(user_id: int, client_id: str) -> NewReply | None:
    """The rows an earlier delivery of this client id created, if any (idempotent sends).

    A send or an edit stores the client id on its user message; a regenerate on its reply.
    """
    mine = Message.objects.filter(conversation__owner_id=user_id, client_message_id=client_id)
    message = mine.select_related("conversation").order_by("id").first()
    if message is None:
        return None
    if message.role == Message.Role.USER:
        question = message
        reply = message.children.filter(role=Message.Role.ASSISTANT).order_by("id").first()
    else:
        question, reply = message.parent, message
    return NewReply(
        conversation_id=message.conversation_id,
        message_id=question.pk if question else 0,
        reply_id=reply.pk if reply else 0,
        parent_id=question.parent_id if question else None,
        duplicate=True,
        title=message.conversation.title,
        new_conversation=False,
        model=reply.model if reply else "",
    )


def path_to(message: Message) -> list[Message]:
    """The branch from the conversation's first message down to ``message``."""
    by_id = {m.pk: m for m in message.conversation.messages.all()}
    path: list[Message] = []
    node: Message | None = message
    while node is not None and len(path) <= len(by_id):
        path.append(node)
        node = by_id.get(node.parent_id) if node.parent_id else None
    path.reverse()
    return path


def _title_from(content: str) -> str:
    words = " ".join(content.split())
    return words if len(words) <= TITLE_CHARS else words[: TITLE_CHARS - 1].rstrip() + "…"


def _lease() -> Any:
    return timezone.now() + timedelta(seconds=app_settings.LEASE_SECONDS)


def create_reply_rows(
    *,
    user_id: int,
    model_id: str,
    client_id: str,
    conversation_id: int | None = None,
    content: str | None = None,
    parent_id: int | None = None,
    question_id: int | None = None,
    attachment_ids: Sequence[int] = (),
    attachment_copies: Sequence[Attachment] = (),
) -> NewReply:
    """Store the user's message (unless regenerating ``question_id``) and a streaming reply row.

    ``attachment_ids``: the user's unsent attachments, now the message's (one that another send
    took meanwhile is ``not_found``, and nothing is stored); ``attachment_copies``: attachments
    of an edited message it keeps (new rows sharing their files).

    One transaction: the conversation row is locked so two sends cannot both start a reply in it
    (``busy``), and the unique client id makes a repeated delivery fail (IntegrityError) instead
    of storing a second copy.
    """
    now = timezone.now()
    # Inside the admission's transaction (``plan``): no savepoint of its own. A repeated client
    # id raises IntegrityError, and the caller answers with the first delivery's rows.
    with transaction.atomic(savepoint=False):
        new_conversation = conversation_id is None and question_id is None
        if new_conversation:
            assert content is not None
            conversation = Conversation.objects.create(
                owner_id=user_id,
                title=_title_from(content),
                model=model_id,
                client_id=client_id,
                created=now,
                updated=now,
            )
        else:
            mine = Conversation.objects.filter(owner_id=user_id)
            if question_id is not None:
                mine = mine.filter(messages__pk=question_id)
            else:
                mine = mine.filter(pk=conversation_id)
            # The lock, taken by writing first (see finish); the model is the one used last.
            if not mine.update(updated=now, model=model_id):
                raise not_found("conversation")
            conversation = mine.get()
            if conversation.messages.filter(status=Message.Status.STREAMING).exists():
                raise ChatError("busy", "A reply is still streaming in this conversation.")
        if question_id is None:
            question = Message.objects.create(
                conversation=conversation,
                parent_id=parent_id,
                role=Message.Role.USER,
                content=content or "",
                client_message_id=client_id,
                created=now,
            )
        else:
            question = Message.objects.get(pk=question_id)
        if attachment_ids:
            claimed = Attachment.objects.filter(
                pk__in=attachment_ids, owner_id=user_id, message__isnull=True
            ).update(message=question)
            if claimed != len(attachment_ids):
                raise not_found("attachment")
        if attachment_copies:
            Attachment.objects.bulk_create(
                Attachment(
                    owner_id=user_id,
                    message=question,
                    **{f: getattr(row, f) for f in ATTACHMENT_COPIED_FIELDS},
                )
                for row in attachment_copies
            )
        reply = _streaming_reply_row(
            conversation,
            question,
            model_id,
            now,
            client_id=client_id if question_id is not None else "",
        )
    return NewReply(
        conversation_id=conversation.pk,
        message_id=question.pk,
        reply_id=reply.pk,
        parent_id=question.pk,
        duplicate=False,
        title=conversation.title,
        new_conversation=new_conversation,
    )


def _streaming_reply_row(
    conversation: Conversation, parent: Message | None, model_id: str, now: Any, client_id: str = ""
) -> Message:
    """The assistant row a reply streams into, with its first lease."""
    return Message.objects.create(
        conversation=conversation,
        parent=parent,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=model_id,
        client_message_id=client_id,
        lease_expires=_lease(),
        created=now,
    )


def create_exchange_rows(user_id: int, model_id: str, turns: list[dict[str, str]]) -> NewReply:
    """A new conversation holding the request's messages as a chain, and a streaming reply."""
    now = timezone.now()
    last_question = next(t["content"] for t in reversed(turns) if t["role"] == "user")
    with transaction.atomic(savepoint=False):
        conversation = Conversation.objects.create(
            owner_id=user_id,
            title=_title_from(last_question),
            model=model_id,
            created=now,
            updated=now,
        )
        parent: Message | None = None
        for turn in turns:
            parent = Message.objects.create(
                conversation=conversation,
                parent=parent,
                role=turn["role"],
                content=turn["content"],
                status=Message.Status.COMPLETE,
                created=now,
            )
        reply = _streaming_reply_row(conversation, parent, model_id, now)
    assert parent is not None
    return NewReply(
        conversation_id=conversation.pk,
        message_id=parent.pk,
        reply_id=reply.pk,
        parent_id=parent.pk,
        duplicate=False,
        title=conversation.title,
        new_conversation=True,
    )


class StoredReply:
    """Where a stored reply's text goes: its assistant row (and its conversation)."""

    __slots__ = ("reply_id", "conversation_id", "parent_id")

    def __init__(self, reply_id: int, conversation_id: int, parent_id: int | None) -> None:
        self.reply_id: int | None = reply_id
        self.conversation_id: int | None = conversation_id
        self.parent_id = parent_id

    @property
    def label(self) -> str:
        """How log lines name this reply."""
        return str(self.reply_id)

    def checkpoint(self, text: str, reasoning: str, renew: Reservation | None = None) -> None:
        """Append the text (and reasoning) added since the last checkpoint and renew the lease,
        only while the row is still streaming: bytes written stay linear in the reply's length.
        ``renew``: also move that limit reservation's lease."""
        fields: dict[str, Any] = {"lease_expires": _lease()}
        if text:
            fields["content"] = Concat(F("content"), Value(text))
        if reasoning:
            fields["reasoning"] = Concat(F("reasoning"), Value(reasoning))
        Message.objects.filter(pk=self.reply_id, status=Message.Status.STREAMING).update(**fields)
        if renew is not None:
            limits.renew(renew)

    def store_step(self, user_id: Any, usage: dict[str, Any], calls: list[dict[str, Any]]) -> None:
        """One step of a reply with tool calls ended: its calls and its own Usage row."""
        with transaction.atomic():
            tool_call_rows(self.reply_id, user_id, calls)
            Usage.objects.create(
                user_id=user_id, message_id=self.reply_id, created=timezone.now(), **usage
            )

    def finish(
        self,
        *,
        user_id: Any,
        content: str,
        reasoning: str,
        status: str,
        finish_reason: str,
        model_used: str,
        error_code: str,
        error_message: str,
        usage: dict[str, Any] | None,
        reservation: Reservation | None = None,
        key_used: KeyChoice | None = None,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> tuple[Message, Usage | None]:
        """The reply's final state and its one Usage row in one transaction; then the limits
        are settled and the key's use noted (the same trip).

        Every transaction here writes before it reads. On SQLite a transaction that read first
        holds a shared lock it cannot upgrade while another connection (another worker, an admin
        request) waits to write: SQLite answers "database is locked" at once instead of waiting,
        and the reply would stay ``streaming`` until the reaper marked it interrupted. Writing
        first waits its turn (the busy timeout); on PostgreSQL the UPDATE locks the row.
        """
        now = timezone.now()
        fields: dict[str, Any] = {
            "content": content,
            "reasoning": reasoning,
            "status": status,
            "finish_reason": finish_reason,
            "error_code": error_code,
            "error_message": error_message,
            "completed": now,
            "lease_expires": None,
        }
        if model_used:
            fields["model"] = model_used
        row: Usage | None = None
        with transaction.atomic():
            rows = Message.objects.filter(pk=self.reply_id)
            if tool_calls:  # a round cut short (stopped, timed out) is stored as it stood
                tool_call_rows(self.reply_id, user_id, tool_calls)
            if usage is None:
                # Its last step is stored already (the next one was refused before it began).
                rows.update(**fields)
            elif rows.filter(status=Message.Status.STREAMING).update(**fields):
                row = Usage.objects.create(
                    user_id=user_id, message_id=self.reply_id, created=now, **usage
                )
            else:
                # The reaper took it for dead: it has its row already; settle that one, never a
                # second.
                rows.update(**fields)
                row = Usage.objects.filter(message_id=self.reply_id).order_by("id").first()
                if row is None:
                    row = Usage.objects.create(
                        user_id=user_id, message_id=self.reply_id, created=now, **usage
                    )
                else:
                    for name, value in usage.items():
                        setattr(row, name, value)
                    row.save()
        if usage is not None:
            _settle(reservation, usage)
        if key_used is not None:
            note_key_used(key_used)
        if signals.reply_finished.has_listeners(Message):
            reply = Message.objects.get(pk=self.reply_id)
        else:  # nobody needs the whole row: what we wrote is enough for the engine
            reply = Message(
                pk=self.reply_id,
                conversation_id=self.conversation_id,
                parent_id=self.parent_id,
                role=Message.Role.ASSISTANT,
                **fields,
            )
        return reply, row


def tool_call_rows(reply_id: Any, user_id: Any, calls: list[dict[str, Any]]) -> None:
    """Store a round of tool calls (``ToolCall`` fields each), in one statement."""
    from ..models import ToolCall

    if calls:
        ToolCall.objects.bulk_create(
            ToolCall(message_id=reply_id, user_id=user_id, **call) for call in calls
        )


class UnstoredExchange:
    """An API exchange that is not stored as a conversation: only its Usage row is written."""

    __slots__ = ()
    reply_id: int | None = None
    conversation_id: int | None = None

    def __init__(self, source: str = "") -> None:
        pass

    label = "(api, not stored)"

    def checkpoint(self, text: str, reasoning: str, renew: Reservation | None = None) -> None:
        if renew is not None:
            limits.renew(renew)

    def finish(
        self,
        *,
        user_id: Any,
        usage: dict[str, Any],
        reservation: Reservation | None = None,
        key_used: KeyChoice | None = None,
        **ignored: Any,
    ) -> tuple[None, Usage]:
        row = Usage.objects.create(user_id=user_id, message=None, created=timezone.now(), **usage)
        _settle(reservation, usage)
        if key_used is not None:
            note_key_used(key_used)
        return None, row


def settle(reservation: Reservation | None, usage: dict[str, Any]) -> None:
    """Settle ``reservation`` with a request's usage fields (errors are logged, not raised)."""
    _settle(reservation, usage)


def _settle(reservation: Reservation | None, usage: dict[str, Any]) -> None:
    if reservation is None:
        return
    try:
        limits.settle(
            reservation,
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            cost=usage["cost"],
        )
    except Exception:
        logger.exception("streamchat: settling reservation %s failed", reservation.pk)


# When this process last wrote each key's ``last_used``: once a minute is enough for admins, and
# a busy site does not rewrite the key row on every reply.
_KEY_USED_EVERY = 60.0
_key_used_at: dict[int, float] = {}


def note_key_used(key: KeyChoice) -> None:
    if key.id is None:
        return
    now = time.monotonic()
    if now - _key_used_at.get(key.id, -_KEY_USED_EVERY) < _KEY_USED_EVERY:
        return
    _key_used_at[key.id] = now
    record_key_used(key)


def update_usage_cost(usage_id: int, figures: dict[str, Any]) -> UsageFigures | None:
    """Replace estimated figures with what OpenRouter's /generation reported later; the row's
    figures as they now stand (None: the row is gone)."""
    Usage.objects.filter(pk=usage_id).update(**figures)
    row = Usage.objects.filter(pk=usage_id).first()
    if row is None:
        return None
    return UsageFigures(
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        reasoning_tokens=row.reasoning_tokens,
        cost=row.cost if row.cost_source != Usage.CostSource.UNKNOWN else None,
        estimated=row.cost_source == Usage.CostSource.ESTIMATED,
    )


def reap_interrupted(now: Any = None) -> list[int]:
    """Mark replies whose worker stopped renewing the lease as interrupted, keeping their text.

    Safe with several workers: a live worker renews its leases every ``CHECKPOINT_MS``, far inside
    ``LEASE_SECONDS``. Each interrupted reply gets its one Usage row (estimated figures).
    """
    now = now or timezone.now()
    reaped: list[int] = []
    stale = Message.objects.filter(
        status=Message.Status.STREAMING, lease_expires__lt=now
    ).values_list("pk", flat=True)
    for reply_id in list(stale):
        with transaction.atomic():
            # One conditional UPDATE, written first (see finish_reply): of two reapers, only one
            # changes the row.
            if not Message.objects.filter(
                pk=reply_id, status=Message.Status.STREAMING, lease_expires__lt=now
            ).update(
                status=Message.Status.INTERRUPTED,
                error_code="interrupted",
                error_message="The reply was interrupted.",
                completed=now,
                lease_expires=None,
            ):
                continue
            reply = Message.objects.select_related("conversation").get(pk=reply_id)
            completion = estimate_tokens(reply.content) + estimate_tokens(reply.reasoning)
            reservation = (
                Reservation.objects.filter(
                    message_id=reply_id,
                    state__in=[Reservation.State.OPEN, Reservation.State.EXPIRED],
                )
                .order_by("id")
                .first()
            )
            cost = (
                pricing.cost(0, completion, reservation.prompt_price, reservation.completion_price)
                if reservation is not None
                else None
            )
            if not reply.usage.exists():
                Usage.objects.create(
                    user_id=reply.conversation.owner_id,
                    message=reply,
                    model_requested=reply.model,
                    model_used=reply.model,
                    completion_tokens=completion,
                    cost=cost or Decimal(0),
                    cost_source=Usage.CostSource.ESTIMATED,
                    outcome=Usage.Outcome.INTERRUPTED,
                    error_code="interrupted",
                )
        if reservation is not None:
            # Its slot frees now, and its worst case gives way to the estimate.
            figures = {"prompt_tokens": 0, "completion_tokens": completion, "cost": cost}
            _settle(reservation, figures)
        reaped.append(reply_id)
    return reaped


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token) where OpenRouter reported none."""
    return (len(text) + 3) // 4


def finished_frames(reply_ids: list[int]) -> list[dict[str, Any]]:
    """The ``reply.finished`` frame of each ended reply (with its owner's id as ``user``, for the
    log)."""
    from . import frames

    replies = Message.objects.filter(pk__in=reply_ids).select_related("conversation")
    return [
        {**frames.finished(frames.finished_event(reply)), "user": reply.conversation.owner_id}
        for reply in replies
    ]
