"""OpenRouter API keys: write-only secrets, failover order, health, and "Verify with OpenRouter"."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from .. import crypto, snapshots
from ..forms import ApiKeyForm
from ..models import ApiKey
from ..openrouter.errors import OpenRouterError
from ..pricing import usd
from ..scrub import scrub

# The parts of OpenRouter's /key answer kept on the row and shown in admin.
ACCOUNT_FIELDS = ("label", "limit", "limit_remaining", "limit_reset", "usage", "is_free_tier")


def key_state(key: ApiKey) -> tuple[str, str]:
    """``(state, detail)``: state is unreadable, disabled, failing or active."""
    try:
        crypto.decrypt(key.secret_encrypted)
    except crypto.UnreadableSecret:
        return "unreadable", str(
            _("Cannot be decrypted with the configured encryption keys: paste the key again.")
        )
    if not key.is_active:
        return "disabled", ""
    if key.is_failing:
        when = (
            date_format(timezone.localtime(key.last_error_at), "DATETIME_FORMAT")
            if key.last_error_at
            else ""
        )
        # Scrubbed again on display: a row written before the scrubber existed may hold an echo
        # (the key was just decrypted above, so the scrubber knows it).
        error = scrub(key.last_error)
        return "failing", f"{error} ({when})" if when else error
    return "active", ""


def money(value: Any) -> str:
    return usd(value)  # "?" for what is not a number


def account_summary(account: dict[str, Any]) -> str:
    """One line from /key's answer: label, limit, usage and what is left (USD)."""
    if not account:
        return ""
    limit = account.get("limit")
    parts = [
        str(_("OpenRouter label “%(label)s”")) % {"label": account.get("label") or "?"},
        str(_("limit %(limit)s")) % {"limit": money(limit) if limit is not None else _("none")},
        str(_("used %(usage)s")) % {"usage": money(account.get("usage") or 0)},
    ]
    remaining = account.get("limit_remaining")
    parts.append(
        str(_("remaining %(left)s"))
        % {"left": money(remaining) if remaining is not None else _("unlimited")}
    )
    if account.get("is_free_tier"):
        parts.append(str(_("free tier")))
    return " · ".join(parts)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = [
        "label",
        "hint",
        "status",
        "priority",
        "remaining_credit",
        "last_used",
        "last_verified",
    ]
    list_editable = ["priority"]
    list_filter = ["is_active"]
    search_fields = ["label", "hint"]
    ordering = ["priority", "id"]
    actions = ["verify", "activate", "deactivate"]
    readonly_fields = [
        "hint",
        "status",
        "account_info",
        "last_used",
        "last_verified",
        "last_error",
        "last_error_at",
        "created",
    ]

    def get_fieldsets(self, request: HttpRequest, obj: ApiKey | None = None) -> Any:
        fieldsets: list[tuple[Any, dict[str, Any]]] = [
            (None, {"fields": ["label", "secret"] + (["hint"] if obj else [])}),
            (_("Failover"), {"fields": ["is_active", "priority"]}),
        ]
        if obj is not None:
            fieldsets.append(
                (
                    _("Health"),
                    {
                        "fields": [
                            "status",
                            "account_info",
                            "last_used",
                            "last_verified",
                            "last_error",
                            "last_error_at",
                            "created",
                        ]
                    },
                )
            )
        return fieldsets

    # The secret is in the POST of the add and change forms: keep it out of error reports.
    @method_decorator(sensitive_post_parameters("secret"))
    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        return super().changeform_view(request, object_id, form_url, extra_context)

    @admin.display(description=_("status"))
    def status(self, key: ApiKey) -> str:
        state, detail = key_state(key)
        labels = {
            "unreadable": _("unreadable"),
            "disabled": _("disabled"),
            "failing": _("failing"),
            "active": _("active"),
        }
        return format_html(
            '<span class="streamchat-badge streamchat-badge-{}" title="{}">{}</span>{}',
            state,
            detail,
            labels[state],
            format_html('<br><small class="streamchat-detail">{}</small>', detail)
            if detail
            else "",
        )

    @admin.display(description=_("remaining credit"))
    def remaining_credit(self, key: ApiKey) -> str:
        if not key.account:
            return "–"
        remaining = key.account.get("limit_remaining")
        return money(remaining) if remaining is not None else str(_("unlimited"))

    @admin.display(description=_("OpenRouter account (at last verify)"))
    def account_info(self, key: ApiKey) -> str:
        return account_summary(key.account) or str(
            _("Not verified yet: use “Verify with OpenRouter”.")
        )

    @admin.action(description=_("Verify with OpenRouter"))
    @method_decorator(sensitive_variables("secret"))
    def verify(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        # Imported here: the account client belongs to the OpenRouter package, which the admin
        # pages only need when this action runs.
        from ..openrouter.account import get_key_info

        for key in queryset:
            now = timezone.now()
            try:
                secret = crypto.decrypt(key.secret_encrypted)
            except crypto.UnreadableSecret:
                self.message_user(
                    request,
                    _(
                        "%(key)s: cannot be decrypted with the configured encryption keys; "
                        "paste the key again."
                    )
                    % {"key": key},
                    messages.ERROR,
                )
                continue
            try:
                info = get_key_info(secret)
            except OpenRouterError as exc:
                key.last_error, key.last_error_at = exc.message, now
                key.save(update_fields=["last_error", "last_error_at"])
                self.message_user(request, f"{key}: {exc.message}", messages.ERROR)
                continue
            data = info.get("data", info) if isinstance(info, dict) else {}
            key.account = {name: data.get(name) for name in ACCOUNT_FIELDS}
            remaining = data.get("limit_remaining")
            if remaining is not None and _as_decimal(remaining) <= 0:
                key.last_error = str(_("Out of credits: the key's limit is used up."))
                key.last_error_at = now
                key.save(update_fields=["account", "last_error", "last_error_at"])
                self.message_user(
                    request,
                    f"{key}: {key.last_error} {account_summary(key.account)}",
                    messages.WARNING,
                )
                continue
            key.last_verified = now
            key.save(update_fields=["account", "last_verified"])
            self.message_user(request, f"{key}: {account_summary(key.account)}", messages.SUCCESS)

    @admin.action(description=_("Activate selected keys"))
    def activate(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = queryset.update(is_active=True)
        snapshots.clear_all()  # a bulk update sends no signals
        self.message_user(
            request, _("%(count)d key(s) activated.") % {"count": count}, messages.SUCCESS
        )

    @admin.action(description=_("Disable selected keys"))
    def deactivate(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = queryset.update(is_active=False)
        snapshots.clear_all()  # a bulk update sends no signals
        self.message_user(
            request, _("%(count)d key(s) disabled.") % {"count": count}, messages.SUCCESS
        )

    class Media:
        css = {"all": ["streamchat/admin/admin.css"]}


def _as_decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(1)
