"""The chat page and the session JSON API (docs/http.md).

The page is one template plus ES modules (``static/streamchat/chat/``); replies stream over the
websocket (docs/protocol.md) or Server-Sent Events (``streamchat.http.sse``). Here: the user's
conversations (list by recency with search, create, rename, delete), one conversation as a message
tree with its current branch, and the enabled models.

The JSON views are ``streamchat.http.responses.JsonView``s and share its contract: session
authentication (401 ``not_authenticated`` rather than a login redirect), CSRF on unsafe methods
(403 ``csrf_failed``), and every error is ``{"code": ..., "message": ...}`` with a stable code and
its status in ``streamchat.exceptions.CODES`` (429 also sends ``Retry-After``). Another user's
conversation answers exactly like a missing one (404 ``not_found``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from decimal import Decimal
from typing import Any, ClassVar

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth.mixins import LoginRequiredMixin
from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import resolve_url
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.utils.translation import gettext as _
from django.views.generic import TemplateView

from . import export
from .catalog import enabled_assistants, enabled_models
from .conf import app_settings
from .http.attachments import attachment_json
from .http.responses import JsonView, json_error
from .models import Attachment, Conversation, Message, ToolCall, Usage
from .text import clean_text
from .upstream import is_simulator

logger = logging.getLogger("streamchat.views")

TITLE_MAX_CHARS = Conversation._meta.get_field("title").max_length or 200
LIST_LIMIT_DEFAULT = 50
LIST_LIMIT_MAX = 200
SEARCH_MAX_CHARS = 200


# --- helpers shared by the page and the API ----------------------------------------------------


def uses_simulator() -> bool:
    """True when BASE_URL said it is streamchat's simulator (streamchat.upstream), whatever its
    address."""
    return is_simulator()


def conversation_summary(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": conversation.pk,
        "title": str(conversation),
        "model": conversation.model,
        "created": conversation.created.isoformat(),
        "updated": conversation.updated.isoformat(),
        "streaming": bool(getattr(conversation, "streaming", False)),
    }


def _usage_totals(rows: list[Usage]) -> dict[str, Any] | None:
    """A reply's usage summed over its upstream requests (one row each), or None before it ends."""
    if not rows:
        return None
    cost = sum((row.cost for row in rows), Decimal(0))
    return {
        "prompt_tokens": sum(row.prompt_tokens for row in rows),
        "completion_tokens": sum(row.completion_tokens for row in rows),
        "reasoning_tokens": sum(row.reasoning_tokens for row in rows),
        # A decimal string like the websocket's reply.finished; no float rounding on the way.
        "cost": format(cost.normalize(), "f") if cost else "0",
        # Until OpenRouter's own figures replace them (a reply.usage frame tells open pages).
        "estimated": any(row.cost_source == Usage.CostSource.ESTIMATED for row in rows),
    }


def _tool_call_json(row: ToolCall) -> dict[str, Any]:
    return {
        "call": row.call_id,
        "step": row.step,
        "offset": row.offset,
        "name": row.tool_name,
        "arguments": row.arguments,
        "status": row.status,
        "summary": row.result,
        "duration_ms": row.duration_ms,
    }


def conversation_tree(conversation: Conversation) -> dict[str, Any]:
    """One conversation with every message, each naming its parent, children and siblings.

    Siblings (regenerations and edits, which share a parent) are ordered oldest first, so the page
    can show "‹ 2 / 3 ›". ``current`` is the newest message: the page shows the branch leading to
    it. Offsets and ``length`` are in code points, as on the websocket.
    """
    messages = list(
        conversation.messages.order_by("created", "id").prefetch_related(
            Prefetch("usage", queryset=Usage.objects.order_by("id")),
            Prefetch("attachments", queryset=Attachment.objects.order_by("id")),
            Prefetch("tool_calls", queryset=ToolCall.objects.order_by("step", "id")),
        )
    )
    children: dict[int | None, list[int]] = defaultdict(list)
    for message in messages:
        children[message.parent_id].append(message.pk)
    items = []
    for message in messages:
        siblings = children[message.parent_id]
        error = (
            {"code": message.error_code, "message": message.error_message}
            if message.error_code or message.error_message
            else None
        )
        items.append(
            {
                "id": message.pk,
                "parent": message.parent_id,
                "role": message.role,
                "content": message.content,
                "length": len(message.content),
                "reasoning": message.reasoning,
                "status": message.status,
                "model": message.model,
                "finish_reason": message.finish_reason,
                "error": error,
                "usage": _usage_totals(list(message.usage.all())),
                # Images and PDFs sent with a user message (served by api/attachments/<id>/).
                "attachments": [attachment_json(a) for a in message.attachments.all()],
                # A reply's tool steps, as its tool.call / tool.result frames said them (the page
                # shows them again at their offsets after a reload).
                "tool_calls": [_tool_call_json(c) for c in message.tool_calls.all()],
                "created": message.created.isoformat(),
                "completed": message.completed.isoformat() if message.completed else None,
                "children": children.get(message.pk, []),
                "siblings": siblings,
                "sibling_count": len(siblings),
                "sibling_index": siblings.index(message.pk) + 1,
            }
        )
    newest = max(messages, key=lambda m: (m.created, m.pk), default=None)
    parents = {message.pk: message.parent_id for message in messages}
    branch: list[int] = []
    node = newest.pk if newest else None
    while node is not None and len(branch) <= len(messages):
        branch.append(node)
        node = parents.get(node)
    branch.reverse()
    return {
        **conversation_summary(conversation),
        "streaming": any(m.status == Message.Status.STREAMING for m in messages),
        "messages": items,
        "current": newest.pk if newest else None,
        "branch": branch,
    }


def user_conversations(user: Any) -> QuerySet[Conversation]:
    streaming = Message.objects.filter(conversation=OuterRef("pk"), status=Message.Status.STREAMING)
    return Conversation.objects.filter(owner=user).annotate(streaming=Exists(streaming))


# --- the page ----------------------------------------------------------------------------------


class ChatView(LoginRequiredMixin, TemplateView):
    """The chat page; ``/c/<pk>/`` opens one conversation (a missing one opens a new chat).

    Sends a Content-Security-Policy (``CONTENT_SECURITY_POLICY``) so that even a sanitiser bug
    could not run inline script or load an image from another origin.
    """

    template_name = "streamchat/chat.html"
    # Where streamchat.routing's websocket route is mounted by the host's ASGI router.
    websocket_path: ClassVar[str] = "/ws/streamchat/"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        pk = kwargs.get("pk")
        conversation = (
            Conversation.objects.filter(owner=self.request.user, pk=pk).first() if pk else None
        )
        models = enabled_models()
        assistants = enabled_assistants()
        simulator = uses_simulator()
        context.update(
            conversation=conversation,
            models=models,
            assistants=assistants,
            simulator=simulator,
            streamchat_config={
                "websocket": self.websocket_path,
                "user": self.request.user.pk,
                "csrf_token": get_token(self.request),
                "urls": {
                    "chat": reverse("streamchat:chat"),
                    "conversations": reverse("streamchat:api-conversations"),
                    "models": reverse("streamchat:api-models"),
                    "attachments": reverse("streamchat:api-attachments"),
                    "login": resolve_url(settings.LOGIN_URL),
                },
                "conversation": conversation.pk if conversation else None,
                "models": models,
                "assistants": assistants,
                "max_message_chars": app_settings.MAX_MESSAGE_CHARS,
                # What the composer may attach (docs/http.md#attachments); checked again on upload.
                "attachments": {
                    "max_bytes": app_settings.ATTACHMENT_MAX_BYTES,
                    "per_message": app_settings.ATTACHMENTS_PER_MESSAGE,
                    "types": list(app_settings.ATTACHMENT_TYPES),
                },
                "simulator": simulator,
            },
        )
        return context

    def render_to_response(self, context: dict[str, Any], **kwargs: Any) -> HttpResponse:
        response = super().render_to_response(context, **kwargs)
        policy = app_settings.CONTENT_SECURITY_POLICY
        if policy:
            response.headers["Content-Security-Policy"] = policy
        return response


# --- the JSON API ------------------------------------------------------------------------------


class ConversationListView(JsonView):
    """GET: the user's conversations, most recent first. ``q`` searches titles and message text;
    ``limit`` (≤ 200) and ``offset`` page through them."""

    def get(self, request: HttpRequest) -> JsonResponse:
        try:
            limit = min(max(int(request.GET.get("limit", LIST_LIMIT_DEFAULT)), 1), LIST_LIMIT_MAX)
            offset = max(int(request.GET.get("offset", 0)), 0)
        except ValueError:
            return json_error("invalid", _("limit and offset must be integers."), field="limit")
        conversations = user_conversations(request.user).order_by("-updated", "-id")
        # Stored text holds no NUL (PostgreSQL rejects one in a query): clean the query alike.
        query = clean_text(request.GET.get("q", "")).strip()[:SEARCH_MAX_CHARS]
        if query:
            in_messages = Message.objects.filter(
                conversation=OuterRef("pk"), content__icontains=query
            ).exclude(role=Message.Role.SYSTEM)
            conversations = conversations.filter(Q(title__icontains=query) | Exists(in_messages))
        page = list(conversations[offset : offset + limit + 1])
        more = len(page) > limit
        return JsonResponse(
            {
                "conversations": [conversation_summary(c) for c in page[:limit]],
                "next_offset": offset + limit if more else None,
                "q": query,
            }
        )


class ConversationCreateView(JsonView):
    """POST ``{"title": ..., "model": ...}`` (both optional): a new, empty conversation (201).

    Its first message goes through the websocket or ``POST api/stream/`` with its id; a message
    sent with ``conversation: null`` creates a conversation too."""

    def post(self, request: HttpRequest) -> JsonResponse:
        body = self.read_json(request)
        if isinstance(body, JsonResponse):
            return body
        title = body.get("title", "")
        if not isinstance(title, str):
            return json_error("invalid", _("title must be a string."), field="title")
        title = " ".join(clean_text(title).split())
        if len(title) > TITLE_MAX_CHARS:
            return json_error(
                "invalid",
                _("A title has at most %(count)s characters.") % {"count": TITLE_MAX_CHARS},
                field="title",
            )
        model = body.get("model")
        enabled = {m["id"]: m for m in enabled_models()}
        if model is None:
            model = next(m["id"] for m in enabled.values() if m["default"])
        elif not isinstance(model, str) or model not in enabled:
            return json_error("model_unavailable", _("This model is not available."), field="model")
        conversation = Conversation.objects.create(owner=request.user, title=title, model=model)
        response = JsonResponse(conversation_summary(conversation), status=201)
        response["Location"] = reverse("streamchat:api-conversation", args=[conversation.pk])
        return response


class ConversationDetailView(JsonView):
    """GET: one conversation with its message tree. PATCH ``{"title": ...}``: rename. DELETE."""

    def get_conversation(self, request: HttpRequest, pk: int) -> Conversation | JsonResponse:
        # Another user's conversation is indistinguishable from a missing one.
        conversation = user_conversations(request.user).filter(pk=pk).first()
        if conversation is None:
            return json_error("not_found", _("No such conversation."))
        return conversation

    def get(self, request: HttpRequest, pk: int) -> JsonResponse:
        conversation = self.get_conversation(request, pk)
        if isinstance(conversation, JsonResponse):
            return conversation
        return JsonResponse(conversation_tree(conversation))

    def patch(self, request: HttpRequest, pk: int) -> JsonResponse:
        conversation = self.get_conversation(request, pk)
        if isinstance(conversation, JsonResponse):
            return conversation
        body = self.read_json(request)
        if isinstance(body, JsonResponse):
            return body
        title = body.get("title")
        if not isinstance(title, str):
            return json_error("invalid", _("title must be a string."), field="title")
        title = " ".join(clean_text(title).split())
        if len(title) > TITLE_MAX_CHARS:
            return json_error(
                "invalid",
                _("A title has at most %(count)s characters.") % {"count": TITLE_MAX_CHARS},
                field="title",
            )
        conversation.title = title
        # Renaming is not activity: the conversation keeps its place in the recency list.
        conversation.save(update_fields=["title"])
        announce_title(conversation.pk, title)
        return JsonResponse(conversation_summary(conversation))

    def delete(self, request: HttpRequest, pk: int) -> HttpResponse:
        conversation = self.get_conversation(request, pk)
        if isinstance(conversation, JsonResponse):
            return conversation
        conversation.delete()  # Usage rows stay (the ledger outlives the chat log).
        return HttpResponse(status=204)


class ConversationExportView(JsonView):
    """GET ``?format=md`` (the current branch, to read) or ``?format=json`` (the default: the
    whole tree with every branch and each reply's usage) as a file to download."""

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        kind = request.GET.get("format", "json")
        if kind not in ("md", "json"):
            return json_error("invalid", _("format must be md or json."), field="format")
        # Another user's conversation is indistinguishable from a missing one.
        conversation = user_conversations(request.user).filter(pk=pk).first()
        if conversation is None:
            return json_error("not_found", _("No such conversation."))
        tree = conversation_tree(conversation)
        if kind == "md":
            response = HttpResponse(
                export.conversation_markdown(tree), content_type="text/markdown; charset=utf-8"
            )
        else:
            response = JsonResponse(
                export.conversation_document(tree), json_dumps_params={"ensure_ascii": False}
            )
        response["Content-Disposition"] = content_disposition_header(
            as_attachment=True, filename=export.filename(tree, kind)
        )
        response["Cache-Control"] = "no-store"  # a user's chat log, not for shared caches
        return response


def announce_title(conversation_id: int, title: str) -> None:
    """Tell the conversation's open tabs (any worker) its new title: ``conversation.updated``."""
    from channels.layers import get_channel_layer

    from .streaming.hub import conversation_group

    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            conversation_group(conversation_id),
            {"type": "streamchat.conversation", "conversation": conversation_id, "title": title},
        )
    except Exception:  # the rename is stored; other tabs see it on their next load
        logger.warning("streamchat: could not announce the new title of %s", conversation_id)


class ModelListView(JsonView):
    """GET: the models the picker offers, with the default marked, and the assistants (each
    picked like a model: its ``id`` is ``assistant:<pk>``)."""

    def get(self, request: HttpRequest) -> JsonResponse:
        models = enabled_models()
        default = next(m["id"] for m in models if m["default"])
        return JsonResponse(
            {"models": models, "default": default, "assistants": enabled_assistants()}
        )
