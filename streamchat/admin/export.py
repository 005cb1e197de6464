"""A data request: one user's conversations (every branch), usage and tokens as one JSON file.

An action on the user admin ("Export chat data (JSON)"), added the way the rate-limit inline is
(``add_user_export_action``, when ``streamchat.admin`` is imported). Only staff who may view
conversations, messages and usage records (``EXPORT_PERMISSIONS``) see and run it: the file holds
everything the user wrote and every reply.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.http import content_disposition_header
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ..export import user_document
from ..models import Conversation
from ..views import conversation_tree

EXPORT_PERMISSIONS = (
    "streamchat.view_conversation",
    "streamchat.view_message",
    "streamchat.view_usage",
)


def can_export(request: HttpRequest) -> bool:
    """Staff with every permission of ``EXPORT_PERMISSIONS`` (a superuser has them all)."""
    user: Any = request.user
    return bool(user.is_active and user.is_staff and user.has_perms(EXPORT_PERMISSIONS))


@admin.action(description=gettext_lazy("Export chat data (JSON)"))
def export_user_data(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Any]
) -> HttpResponse | None:
    """The selected user's streamchat data as a JSON attachment (one user per file)."""
    if not can_export(request):
        raise PermissionDenied  # the action is hidden from them too; this holds for a forged POST
    users = list(queryset[:2])
    if len(users) != 1:
        modeladmin.message_user(
            request,
            _("Select one user: a data export is one user's file."),
            messages.WARNING,
        )
        return None
    user = users[0]
    conversations = Conversation.objects.filter(owner=user).order_by("created", "id")
    document = user_document(user, [conversation_tree(c) for c in conversations])
    response = HttpResponse(
        json.dumps(document, ensure_ascii=False, indent=1),
        content_type="application/json; charset=utf-8",
    )
    response["Content-Disposition"] = content_disposition_header(
        as_attachment=True, filename=f"streamchat-user-{user.pk}.json"
    )
    response["Cache-Control"] = "no-store"
    return response


class UserDataExportMixin:
    """Offers ``export_user_data`` only to those who may run it (``can_export``)."""

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions: dict[str, Any] = super().get_actions(request)  # type: ignore[misc]
        if not can_export(request):
            actions.pop("export_user_data", None)
        return actions


def add_user_export_action(site: admin.AdminSite = admin.site) -> bool:
    """Re-register the user model's admin on ``site`` with ``export_user_data`` added (once).

    Like ``add_limits_inlines``: only when a user admin is registered already. A project whose
    user admin comes later adds ``UserDataExportMixin`` and the action itself (docs/admin.md).
    Returns whether the action is there now.
    """
    User = get_user_model()
    if not site.is_registered(User):
        return False
    base = type(site._registry[User])
    if export_user_data in (base.actions or []):
        return True
    subclass = type(
        base.__name__,
        (UserDataExportMixin, base),
        {"actions": [*(base.actions or []), export_user_data], "__module__": base.__module__},
    )
    site.unregister(User)
    site.register(User, subclass)
    return True
