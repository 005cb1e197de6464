"""The usage ledger: a read-only list with totals for the filtered rows, CSV export of the same
rows, and the dashboard page.

The ledger is append-only from admin's side: no add, no change, no delete (deleting usage would
reset budgets).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from ..models import Usage
from ..pricing import usd
from .dashboard import cost_total, dashboard_context, exact_cost

CSV_COLUMNS = [
    "id",
    "created",
    "user",
    "source",
    "model_requested",
    "model_used",
    "api_key",
    "outcome",
    "error_code",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cost",
    "cost_source",
    "time_to_first_token_ms",
    "duration_ms",
    "generation_id",
    "message_id",
]
# A cell starting with one of these is a formula to a spreadsheet (OWASP "CSV injection"); user
# input (a model name asked for) must not become one.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def totals(queryset: QuerySet[Usage]) -> dict[str, Any]:
    """Requests, tokens and cost (USD) over ``queryset``, in one query."""
    result = queryset.order_by().aggregate(
        requests=Count("id"),
        prompt_tokens=Coalesce(Sum("prompt_tokens"), 0),
        completion_tokens=Coalesce(Sum("completion_tokens"), 0),
        reasoning_tokens=Coalesce(Sum("reasoning_tokens"), 0),
        cost=cost_total(),
    )
    result["tokens"] = result["prompt_tokens"] + result["completion_tokens"]
    result["cost"] = exact_cost(result["cost"])
    return result


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


class _Echo:
    def write(self, value: str) -> str:
        return value


class ModelListFilter(admin.SimpleListFilter):
    """The models that answered (OpenRouter's answer, which a fallback may have changed)."""

    title = _("model")
    parameter_name = "model"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        names = (
            Usage.objects.exclude(model_used="")
            .order_by("model_used")
            .values_list("model_used", flat=True)
            .distinct()
        )
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Usage]) -> QuerySet[Usage]:
        value = self.value()
        return queryset.filter(model_used=value) if value else queryset


@admin.register(Usage)
class UsageAdmin(admin.ModelAdmin):
    change_list_template = "admin/streamchat/usage/change_list.html"
    list_display = [
        "created",
        "user",
        "model_shown",
        "outcome",
        "prompt_tokens",
        "completion_tokens",
        "cost_shown",
        "key_shown",
        "source",
        "duration_ms",
    ]
    list_filter = [
        ("user", admin.RelatedOnlyFieldListFilter),
        ModelListFilter,
        ("api_key", admin.RelatedOnlyFieldListFilter),
        "outcome",
        "source",
        ("created", admin.DateFieldListFilter),
    ]
    list_select_related = ["user", "api_key"]
    date_hierarchy = "created"
    search_fields = ["model_used", "model_requested", "generation_id", "error_code"]
    show_full_result_count = False
    fieldsets = [
        (None, {"fields": ["created", "user", "source", "outcome", "error_code", "message_link"]}),
        (_("Model"), {"fields": ["model_requested", "model_used", "api_key", "generation_id"]}),
        (
            _("Tokens and cost"),
            {
                "fields": [
                    "prompt_tokens",
                    "completion_tokens",
                    "reasoning_tokens",
                    "cost",
                    "cost_source",
                ]
            },
        ),
        (_("Timing"), {"fields": ["time_to_first_token_ms", "duration_ms"]}),
        (_("Details"), {"fields": ["details"], "classes": ["collapse"]}),
    ]
    readonly_fields = ["message_link"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Usage | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Usage | None = None) -> bool:
        return False

    @admin.display(description=_("model"), ordering="model_used")
    def model_shown(self, row: Usage) -> str:
        if row.model_requested and row.model_used and row.model_requested != row.model_used:
            return format_html(
                "{}<br><small>{} {}</small>", row.model_used, _("asked for"), row.model_requested
            )
        return row.model_used or row.model_requested

    @admin.display(description=_("cost (USD)"), ordering="cost")
    def cost_shown(self, row: Usage) -> str:
        return usd(row.cost)

    @admin.display(description=_("API key"), ordering="api_key")
    def key_shown(self, row: Usage) -> str:
        return row.api_key.hint if row.api_key else "–"

    @admin.display(description=_("message"))
    def message_link(self, row: Usage) -> str:
        if row.message_id is None:
            return "–"
        url = reverse("admin:streamchat_message_change", args=[row.message_id])
        return format_html('<a href="{}">{}</a>', url, row.message_id)

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        from django.contrib.auth import get_user_model

        return [*self.search_fields, f"user__{get_user_model().USERNAME_FIELD}"]

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "export.csv",
                self.admin_site.admin_view(self.export_csv),
                name="{}_{}_export".format(*info),
            ),
            path(
                "dashboard/",
                self.admin_site.admin_view(self.dashboard_view),
                name="{}_{}_dashboard".format(*info),
            ),
            *super().get_urls(),
        ]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> Any:
        response = super().changelist_view(request, extra_context)
        # The filtered rows are the changelist's own queryset: the totals and the CSV use the
        # very same filters, search and date drill-down as the table.
        context = getattr(response, "context_data", None)
        if context and "cl" in context:
            context["totals"] = totals(context["cl"].queryset)
        return response

    def export_csv(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseRedirect(reverse("admin:streamchat_usage_changelist") + "?e=1")
        rows = changelist.queryset.select_related("user", "api_key")
        writer = csv.writer(_Echo())

        def lines() -> Iterator[str]:
            yield writer.writerow(CSV_COLUMNS)
            for row in rows.iterator(chunk_size=2000):
                yield writer.writerow(
                    [
                        row.pk,
                        row.created.isoformat(),
                        _cell(row.user),
                        row.source,
                        _cell(row.model_requested),
                        _cell(row.model_used),
                        row.api_key.hint if row.api_key else "",
                        row.outcome,
                        _cell(row.error_code),
                        row.prompt_tokens,
                        row.completion_tokens,
                        row.reasoning_tokens,
                        row.total_tokens,
                        row.cost,
                        row.cost_source,
                        "" if row.time_to_first_token_ms is None else row.time_to_first_token_ms,
                        "" if row.duration_ms is None else row.duration_ms,
                        _cell(row.generation_id),
                        "" if row.message_id is None else row.message_id,
                    ]
                )

        stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
        return StreamingHttpResponse(
            lines(),
            content_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="streamchat-usage-{stamp}.csv"'},
        )

    def dashboard_view(self, request: HttpRequest) -> TemplateResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            **dashboard_context(),
            "title": _("Usage dashboard"),
            "subtitle": None,
            "opts": self.opts,
            "app_label": self.opts.app_label,
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/streamchat/usage/dashboard.html", context)
