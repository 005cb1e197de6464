"""The reply engine's database work: every ORM call of a reply, as plain sync functions.

The engine calls them through ``database_sync_to_async``. A reply touches the database a bounded
number of times: rows created at the start, a checkpoint every ``CHECKPOINT_MS`` while it streams
(never per token), one final write with its Usage row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from ..conf import app_settings
from ..exceptions import ChatError, not_found
from ..models import ChatModel, Conversation, Message, Usage

TITLE_CHARS = 60


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """The model a reply uses, with what admins configured for it."""

    model_id: str
    system_prompt: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    fallback_models: tuple[str, ...] = ()
    context_length: int | None = None
    prompt_price: Decimal | None = None
    completion_price: Decimal | None = None

    def cost_for(self, prompt_tokens: int, completion_tokens: int) -> Decimal | None:
        if self.prompt_price is None or self.completion_price is None:
            return None
        return (
            self.prompt_price * prompt_tokens + self.completion_price * completion_tokens
        ) / 1_000_000


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


def choose_model(requested: str | None) -> ModelChoice:
    """The enabled model asked for, else the default one; ``model_unavailable`` otherwise."""
    enabled = ChatModel.objects.filter(enabled=True)
    if requested:
        row = enabled.filter(model_id=requested).first()
        if row is None:
            if not enabled.exists() and requested == app_settings.DEFAULT_MODEL:
                return ModelChoice(model_id=requested)
            raise ChatError("model_unavailable", "This model is not available.", field="model")
    else:
        row = enabled.filter(is_default=True).first() or enabled.first()
        if row is None:
            return ModelChoice(model_id=app_settings.DEFAULT_MODEL)
    return ModelChoice(
        model_id=row.model_id,
        system_prompt=row.system_prompt,
        temperature=float(row.default_temperature) if row.default_temperature is not None else None,
        max_tokens=row.max_tokens,
        fallback_models=tuple(m for m in row.fallback_models or () if isinstance(m, str)),
        context_length=row.context_length,
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
) -> NewReply:
    """Store the user's message (unless regenerating ``question_id``) and a streaming reply row.

    One transaction: the conversation row is locked so two sends cannot both start a reply in it
    (``busy``), and the unique client id makes a repeated delivery find the first one instead.
    """
    now = timezone.now()
    try:
        with transaction.atomic():
            new_conversation = conversation_id is None and question_id is None
            if new_conversation:
                assert content is not None
                conversation = Conversation.objects.create(
                    owner_id=user_id,
                    title=_title_from(content),
                    model=model_id,
                    client_id=client_id,
                )
            else:
                mine = Conversation.objects.filter(owner_id=user_id)
                if question_id is not None:
                    mine = mine.filter(messages__pk=question_id)
                else:
                    mine = mine.filter(pk=conversation_id)
                # The lock, taken by writing first (see finish_reply).
                if not mine.update(updated=now):
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
            reply = _streaming_reply_row(
                conversation,
                question,
                model_id,
                now,
                client_id=client_id if question_id is not None else "",
            )
            Conversation.objects.filter(pk=conversation.pk).update(updated=now, model=model_id)
    except IntegrityError:
        # A concurrent delivery of the same client id won the race: answer with its rows.
        duplicate = find_duplicate(user_id, client_id)
        if duplicate is None:
            raise
        return duplicate
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
    with transaction.atomic():
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


def checkpoint(reply_id: int, content: str, reasoning: str) -> None:
    """Save the text so far and renew the lease (only while the row is still streaming)."""
    Message.objects.filter(pk=reply_id, status=Message.Status.STREAMING).update(
        content=content, reasoning=reasoning, lease_expires=_lease()
    )


def finish_reply(
    *,
    reply_id: int,
    user_id: int,
    content: str,
    reasoning: str,
    status: str,
    finish_reason: str,
    model_used: str,
    error_code: str,
    error_message: str,
    usage: dict[str, Any],
) -> tuple[Message, Usage]:
    """The reply's final state and its one Usage row, in one transaction.

    Every transaction here writes before it reads. On SQLite a transaction that read first holds
    a shared lock it cannot upgrade while another connection (another worker, an admin request)
    waits to write: SQLite answers "database is locked" at once instead of waiting, and the reply
    would stay ``streaming`` until the reaper marked it interrupted. Writing first waits its turn
    (the busy timeout); on PostgreSQL the UPDATE locks the row as ``select_for_update`` would.
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
    with transaction.atomic():
        Message.objects.filter(pk=reply_id).update(**fields)
        reply = Message.objects.get(pk=reply_id)
        # A reply the reaper took for dead already has its row: settle that one, never a second.
        row = reply.usage.select_for_update().order_by("id").first()
        if row is None:
            row = Usage.objects.create(user_id=user_id, message=reply, created=now, **usage)
        else:
            for name, value in usage.items():
                setattr(row, name, value)
            row.save()
    return reply, row


def record_usage(*, user_id: int, usage: dict[str, Any]) -> Usage:
    """The one Usage row of a reply that has no Message row (an API exchange not stored)."""
    return Usage.objects.create(user_id=user_id, message=None, created=timezone.now(), **usage)


def update_usage_cost(usage_id: int, figures: dict[str, Any]) -> None:
    """Replace estimated figures with what OpenRouter's /generation reported later."""
    Usage.objects.filter(pk=usage_id).update(**figures)


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
            if not reply.usage.exists():
                Usage.objects.create(
                    user_id=reply.conversation.owner_id,
                    message=reply,
                    model_requested=reply.model,
                    model_used=reply.model,
                    completion_tokens=estimate_tokens(reply.content),
                    cost_source=Usage.CostSource.ESTIMATED,
                    outcome=Usage.Outcome.INTERRUPTED,
                    error_code="interrupted",
                )
        reaped.append(reply_id)
    return reaped


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token) where OpenRouter reported none."""
    return (len(text) + 3) // 4


def finished_frame(reply: Message) -> dict[str, Any]:
    """The ``reply.finished`` frame of a reply that already ended, from its rows."""
    usage = reply.usage.order_by("id").first()
    return {
        "type": "reply.finished",
        "reply": reply.pk,
        "conversation": reply.conversation_id,
        "status": reply.status,
        "finish_reason": reply.finish_reason,
        "model": reply.model,
        "length": len(reply.content),
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "cost": str(usage.cost) if usage.cost_source != Usage.CostSource.UNKNOWN else None,
        }
        if usage
        else None,
        "ttft_ms": usage.time_to_first_token_ms if usage else None,
        "error": {"code": reply.error_code, "message": reply.error_message}
        if reply.error_code
        else None,
    }


def finished_frames(reply_ids: list[int]) -> list[dict[str, Any]]:
    """``finished_frame`` of each reply (with its owner's id as ``user``, for the log)."""
    replies = Message.objects.filter(pk__in=reply_ids).select_related("conversation")
    return [{**finished_frame(reply), "user": reply.conversation.owner_id} for reply in replies]
