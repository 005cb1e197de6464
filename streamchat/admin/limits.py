"""Rate limits and budgets: the site default, per group and per user, also inline on user and group pages.

Precedence (``streamchat.limits.effective_limits``): a user's own limit beats their groups', which
beat the site default, field by field; among several groups the most generous wins; blank means no
limit.
"""

from __future__ import annotations

import logging
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import Model
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from ..forms import GroupRateLimitForm, InlineRateLimitForm, RateLimitForm
from ..models import RateLimit

logger = logging.getLogger(__name__)


@admin.register(RateLimit)
class RateLimitAdmin(admin.ModelAdmin):
    form = RateLimitForm
    list_display = ["__str__", "scope", *RateLimit.LIMIT_FIELDS]
    list_filter = ["scope"]
    list_select_related = ["user", "group"]
    search_fields = ["group__name", "user__username"]
    raw_id_fields = ["user"]
    fieldsets = [
        (
            _("Applies to"),
            {
                "fields": ["user", "group"],
                "description": _(
                    "A user, or a group, or neither for the site default. A user's own limits beat "
                    "their groups', which beat the site default; a user in several groups gets the "
                    "most generous value of each."
                ),
            },
        ),
        (
            _("Limits (blank: no limit)"),
            {"fields": list(RateLimit.LIMIT_FIELDS)},
        ),
    ]

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        # A custom user model may have no "username": search its USERNAME_FIELD instead.
        return ["group__name", f"user__{get_user_model().USERNAME_FIELD}"]


class UserRateLimitInline(admin.StackedInline):
    """Limits on the user's own admin page."""

    model = RateLimit
    form = InlineRateLimitForm
    fk_name = "user"
    fields = list(RateLimit.LIMIT_FIELDS)
    extra = 1
    max_num = 1
    can_delete = True
    verbose_name = _("chat rate limit")
    verbose_name_plural = _("chat rate limits (blank: the group or site default applies)")


class GroupRateLimitInline(UserRateLimitInline):
    form = GroupRateLimitForm
    fk_name = "group"
    verbose_name_plural = _("chat rate limits for this group (blank: no limit)")


def _with_inline(model: type[Model], inline: type[admin.options.InlineModelAdmin], site: admin.AdminSite) -> bool:
    """Re-register ``model``'s admin on ``site`` as a subclass with ``inline`` added.

    Only when the model's admin is already registered (streamchat does not invent a user admin
    for a custom user model), and only once. Returns whether the inline is there now.
    """
    if not site.is_registered(model):
        return False
    current = site._registry[model]
    base = type(current)
    if inline in base.inlines:
        return True
    subclass = type(base.__name__, (base,), {"inlines": [*base.inlines, inline], "__module__": base.__module__})
    site.unregister(model)
    site.register(model, subclass)
    return True


def add_limits_inlines(site: admin.AdminSite = admin.site) -> dict[str, bool]:
    """Add the rate-limit inline to the user and group admin pages that ``site`` has.

    Called when ``streamchat.admin`` is imported, which admin's autodiscovery does in
    INSTALLED_APPS order: a user admin registered by an app listed *after* streamchat is not there
    yet. Such a project adds ``UserRateLimitInline`` to its own user admin's ``inlines`` (or calls
    this function from its admin module); docs/admin.md shows both.
    """
    User = get_user_model()
    done = {
        "user": _with_inline(User, UserRateLimitInline, site),
        "group": _with_inline(Group, GroupRateLimitInline, site),
    }
    if not done["user"]:
        logger.debug("No admin for %s yet: the rate-limit inline was not added to it.", User._meta.label)
    return done
