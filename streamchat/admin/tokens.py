"""Users' personal API tokens: who has which, when each was last used, and revoking them.

Admins cannot make or read tokens (only a hash is stored); they can revoke any, one by one or
with the list action. Tokens are made by their users on the chat's tokens page.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..models import PersonalToken
from ..tokens import revoke


class TokenStatusFilter(admin.SimpleListFilter):
    title = _("status")
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("active", _("active")), ("expired", _("expired")), ("revoked", _("revoked"))]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[PersonalToken]
    ) -> QuerySet[PersonalToken]:
        now = timezone.now()
        live = queryset.filter(revoked__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked__isnull=False)
        if self.value() == "expired":
            return live.filter(expires__lte=now)
        if self.value() == "active":
            return live.exclude(expires__lte=now)
        return queryset


@admin.register(PersonalToken)
class PersonalTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "token_prefix", "created", "last_used", "expires", "status_"]
    list_filter = [TokenStatusFilter, "created", "last_used"]
    search_fields = ["name", "prefix", "user__username", "user__email"]
    list_select_related = ["user"]
    ordering = ["-created", "-id"]
    date_hierarchy = "created"
    actions = ["revoke_selected"]
    fields = readonly_fields = (
        "name",
        "user",
        "token_prefix",
        "created",
        "last_used",
        "expires",
        "revoked",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # users make their own tokens; a token made here could never be shown

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Viewing only; revoking is the action (and the button on the change page).
        return False

    @admin.display(description=_("token"), ordering="prefix")
    def token_prefix(self, token: PersonalToken) -> str:
        return f"{token.prefix}…"

    @admin.display(description=_("status"))
    def status_(self, token: PersonalToken) -> str:
        return str(_(token.status))

    @admin.action(description=_("Revoke the selected tokens"), permissions=["revoke"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[PersonalToken]) -> None:
        already = queryset.filter(revoked__isnull=False).count()
        count = revoke(queryset)
        if count:
            self.message_user(
                request,
                ngettext("Revoked %(n)d token.", "Revoked %(n)d tokens.", count) % {"n": count},
                messages.SUCCESS,
            )
        if already:
            self.message_user(
                request,
                ngettext(
                    "%(n)d token was revoked already.",
                    "%(n)d tokens were revoked already.",
                    already,
                )
                % {"n": already},
                messages.WARNING,
            )

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        # Revoking changes a token: staff with change or delete rights on tokens may do it.
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}") or (
            request.user.has_perm(f"{opts.app_label}.delete_{opts.model_name}")
        )
