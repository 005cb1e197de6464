"""The chat log for support: conversations and messages, read-only, each with its usage.

Nothing here can be added or edited (the log is what happened). Deleting a conversation stays
possible for those with the delete permission (a user's request to erase it); its usage rows stay.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db.models import Count, DecimalField, IntegerField, OuterRef, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _

from ..models import Conversation, Message, Usage
from ..pricing import usd


def usage_totals(**match: Any) -> dict[str, Any]:
    """Annotations: ``usage_tokens`` and ``usage_cost`` of the usage rows matching ``match``
    (with OuterRef values), each 0 when there are none.

    Correlated subqueries: joining messages and usage in the outer query would multiply rows (and
    the message count) by the number of usage rows per message.
    """
    rows = Usage.objects.filter(**match).order_by().values(*match.keys())
    tokens = rows.annotate(t=Sum("prompt_tokens") + Sum("completion_tokens")).values("t")
    cost = rows.annotate(c=Sum("cost")).values("c")
    return {
        "usage_tokens": Coalesce(Subquery(tokens, output_field=IntegerField()), 0),
        "usage_cost": Coalesce(
            Subquery(cost, output_field=DecimalField(max_digits=18, decimal_places=10)),
            Decimal(0),
            output_field=DecimalField(max_digits=18, decimal_places=10),
        ),
    }


class ReadOnlyMixin:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class MessageInline(ReadOnlyMixin, admin.TabularInline):
    model = Message
    fields = ["link", "role", "status", "excerpt", "model", "created"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False
    ordering = ["created", "id"]

    @admin.display(description=_("message"))
    def link(self, message: Message) -> str:
        url = reverse("admin:streamchat_message_change", args=[message.pk])
        return format_html('<a href="{}">#{}</a>', url, message.pk)

    @admin.display(description=_("content"))
    def excerpt(self, message: Message) -> str:
        return Truncator(message.content).chars(200)


class UsageInline(ReadOnlyMixin, admin.TabularInline):
    model = Usage
    fields = [
        "created",
        "model_used",
        "outcome",
        "prompt_tokens",
        "completion_tokens",
        "reasoning_tokens",
        "cost",
        "cost_source",
        "duration_ms",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = _("usage")


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["__str__", "owner", "model", "messages_count", "tokens", "cost", "updated"]
    list_select_related = ["owner"]
    list_filter = [("updated", admin.DateFieldListFilter)]
    date_hierarchy = "updated"
    search_fields = ["title", "model"]
    fields = ["title", "owner", "model", "created", "updated", "messages_count", "tokens", "cost"]
    readonly_fields = fields
    inlines = [MessageInline]

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        return [*self.search_fields, f"owner__{get_user_model().USERNAME_FIELD}"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                messages_total=Count("messages", distinct=True),
                **usage_totals(message__conversation=OuterRef("pk")),
            )
        )

    @admin.display(description=_("messages"), ordering="messages_total")
    def messages_count(self, conversation: Conversation) -> int:
        return getattr(conversation, "messages_total", 0)

    @admin.display(description=_("tokens"), ordering="usage_tokens")
    def tokens(self, conversation: Conversation) -> int:
        return getattr(conversation, "usage_tokens", 0)

    @admin.display(description=_("cost (USD)"), ordering="usage_cost")
    def cost(self, conversation: Conversation) -> str:
        return usd(getattr(conversation, "usage_cost", 0))


@admin.register(Message)
class MessageAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["__str__", "conversation_link", "role", "status", "model", "created"]
    list_select_related = ["conversation"]
    list_filter = ["role", "status", ("created", admin.DateFieldListFilter)]
    search_fields = ["content", "conversation__title"]
    date_hierarchy = "created"
    fieldsets = [
        (
            None,
            {"fields": ["conversation_link", "parent", "role", "status", "model", "finish_reason"]},
        ),
        (_("Text"), {"fields": ["content", "reasoning"]}),
        (_("Error"), {"fields": ["error_code", "error_message"]}),
        (_("Times"), {"fields": ["created", "completed"]}),
    ]
    readonly_fields = [
        "conversation_link",
        "parent",
        "role",
        "status",
        "model",
        "finish_reason",
        "content",
        "reasoning",
        "error_code",
        "error_message",
        "created",
        "completed",
    ]
    inlines = [UsageInline]

    @admin.display(description=_("conversation"), ordering="conversation")
    def conversation_link(self, message: Message) -> str:
        url = reverse("admin:streamchat_conversation_change", args=[message.conversation_id])
        return format_html('<a href="{}">{}</a>', url, message.conversation)
