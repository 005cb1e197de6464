"""Tools in admin: the registered tools (switch one off; the code defines the rest), every
call the model made (read-only, like the usage ledger), and the assistants (presets of a model,
system prompt, temperature and tools that users pick like a model)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from ..forms import AssistantForm
from ..models import Assistant, Tool, ToolCall


@admin.register(Tool)
class ToolAdmin(admin.ModelAdmin):
    list_display = ("name", "enabled", "confirm", "description")
    list_editable = ("enabled",)
    list_filter = ("enabled", "confirm")
    search_fields = ("name", "description")
    readonly_fields = ("name", "description", "confirm", "created")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a tool comes from code (@streamchat.tools.tool)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        from ..tools.registry import sync_rows

        sync_rows()  # tools registered since the last migrate are listed too
        return super().changelist_view(request, extra_context)


@admin.register(ToolCall)
class ToolCallAdmin(admin.ModelAdmin):
    list_display = ("created", "tool_name", "status", "user", "message", "step", "duration_ms")
    list_filter = ("status", "tool_name")
    search_fields = ("tool_name", "call_id")
    list_select_related = ("user",)
    raw_id_fields = ("message", "user")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Assistant)
class AssistantAdmin(admin.ModelAdmin):
    """Presets users pick in the chat like a model (docs/admin.md "Assistants")."""

    form = AssistantForm
    list_display = ("name", "model", "enabled", "in_code", "temperature")
    list_editable = ("enabled",)
    list_filter = ("enabled", "in_code")
    search_fields = ("name", "model", "description")
    filter_horizontal = ("tools",)
    readonly_fields = ("in_code", "created")
    fieldsets = (
        (None, {"fields": ("name", "description", "enabled")}),
        (_("Model"), {"fields": ("model", "temperature", "system_prompt")}),
        (_("Tools"), {"fields": ("tools",)}),
        (_("Record"), {"fields": ("in_code", "created"), "classes": ("collapse",)}),
    )

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> Any:
        from ..tools.registry import ensure_synced

        ensure_synced()  # assistants defined in code are listed too
        return super().get_changelist(request, **kwargs)
