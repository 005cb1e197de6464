"""Chat models: which ones users may pick, the default, per-model settings, sync from OpenRouter."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext_lazy as _

from .. import snapshots
from ..forms import ChatModelForm, ChatModelListForm
from ..models import ChatModel
from ..openrouter.errors import OpenRouterError


@admin.register(ChatModel)
class ChatModelAdmin(admin.ModelAdmin):
    form = ChatModelForm
    change_list_template = "admin/streamchat/chatmodel/change_list.html"
    list_display = [
        "__str__",
        "model_id",
        "enabled",
        "is_default",
        "prompt_price",
        "completion_price",
        "context_length",
        "last_synced",
    ]
    list_display_links = ["__str__", "model_id"]
    list_editable = ["enabled"]
    list_filter = ["enabled", "is_default"]
    search_fields = ["model_id", "display_name"]
    actions = ["enable", "disable", "make_default", "sync_selected"]
    readonly_fields = ["created", "updated", "last_synced", "input_modalities"]
    fieldsets = [
        (None, {"fields": ["model_id", "display_name", "enabled", "is_default"]}),
        (
            _("Defaults for a reply"),
            {"fields": ["default_temperature", "max_tokens", "system_prompt", "fallback_models"]},
        ),
        (
            _("From OpenRouter"),
            {
                "fields": [
                    "prompt_price",
                    "completion_price",
                    "context_length",
                    "max_completion_tokens",
                    "input_modalities",
                    "last_synced",
                ],
                "description": _(
                    "“Sync from OpenRouter” fills these; prices are USD per million tokens."
                ),
            },
        ),
        (_("History"), {"fields": ["created", "updated"], "classes": ["collapse"]}),
    ]

    def get_changelist_form(self, request: HttpRequest, **kwargs: Any) -> Any:
        # The list's "enabled" checkboxes get the rule that keeps the default model enabled.
        return super().get_changelist_form(request, form=ChatModelListForm, **kwargs)

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "sync/", self.admin_site.admin_view(self.sync_view), name="{}_{}_sync".format(*info)
            ),
            *super().get_urls(),
        ]

    def sync_view(self, request: HttpRequest) -> HttpResponseRedirect | HttpResponseNotAllowed:
        """The changelist's "Sync from OpenRouter" button (a POST: it writes rows)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not (self.has_change_permission(request) and self.has_add_permission(request)):
            raise PermissionDenied
        self._sync(request, only=None)
        return HttpResponseRedirect(reverse("admin:streamchat_chatmodel_changelist"))

    def _sync(self, request: HttpRequest, *, only: set[str] | None) -> None:
        from ..catalog import fetch_and_sync

        try:
            result = fetch_and_sync(only=only)
        except OpenRouterError as exc:
            self.message_user(
                request,
                _("Sync from OpenRouter failed: %(error)s") % {"error": exc.message},
                messages.ERROR,
            )
            return
        self.message_user(
            request,
            _("Synced from OpenRouter: %(summary)s.") % {"summary": result.summary()},
            messages.WARNING if result.missing else messages.SUCCESS,
        )

    @admin.action(description=_("Refresh selected models from OpenRouter"), permissions=["change"])
    def sync_selected(self, request: HttpRequest, queryset: QuerySet[ChatModel]) -> None:
        self._sync(request, only=set(queryset.values_list("model_id", flat=True)))

    @admin.action(description=_("Enable selected models"), permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[ChatModel]) -> None:
        count = queryset.update(enabled=True)
        snapshots.clear_all()  # a bulk update sends no signals
        self.message_user(
            request, _("%(count)d model(s) enabled.") % {"count": count}, messages.SUCCESS
        )

    @admin.action(description=_("Disable selected models"), permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[ChatModel]) -> None:
        default = queryset.filter(is_default=True).first()
        if default is not None:
            self.message_user(
                request,
                _("%(model)s is the default model: choose another default before disabling it.")
                % {"model": default},
                messages.ERROR,
            )
            queryset = queryset.exclude(pk=default.pk)
        count = queryset.update(enabled=False)
        snapshots.clear_all()  # a bulk update sends no signals
        self.message_user(
            request, _("%(count)d model(s) disabled.") % {"count": count}, messages.SUCCESS
        )

    @admin.action(description=_("Make the selected model the default"), permissions=["change"])
    def make_default(self, request: HttpRequest, queryset: QuerySet[ChatModel]) -> None:
        if queryset.count() != 1:
            self.message_user(
                request, _("Select exactly one model to make it the default."), messages.ERROR
            )
            return
        model = queryset.get()
        model.is_default, model.enabled = True, True
        model.save()
        self.message_user(
            request,
            _("%(model)s is now the default model (and enabled).") % {"model": model},
            messages.SUCCESS,
        )

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> Any:
        extra_context = {
            **(extra_context or {}),
            "can_sync": self.has_change_permission(request) and self.has_add_permission(request),
        }
        return super().changelist_view(request, extra_context)
