"""Rate limits and budgets: the site default, per group and per user; inline on user and group.

Precedence (``streamchat.limits.effective_limits``): the most specific row decides all five limits:
the user's own row, else their groups' rows (per field the most generous; blank, i.e. no limit,
is the most generous), else the site default. A blank field means no limit. Each user's page shows
the limits that apply and what the user has used, from ``streamchat.limits``.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import Model
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from ..forms import GroupRateLimitForm, InlineRateLimitForm, RateLimitForm
from ..models import RateLimit
from ..pricing import usd

logger = logging.getLogger(__name__)

# What each counter of ``streamchat.limits.consumption`` covers.
PERIODS = {
    "requests_per_minute": _("in the last 60 seconds"),
    "requests_per_day": _("today"),
    "tokens_per_day": _("today"),
    "spend_per_month": _("this month"),
    "concurrent_streams": _("running now"),
}
EXPLAIN_PRECEDENCE = _(
    "The most specific limits decide: a user's own row, else their groups' rows (a user in "
    "several groups gets the most generous value of each field), else the site default. A blank "
    "field means no limit."
)


def _shown(name: str, value: Any) -> str:
    if value is None:
        return str(_("no limit"))
    if name == "spend_per_month":
        return usd(value)
    return str(value)


def consumption_table(user: Any) -> str:
    """The limits that apply to ``user`` (after precedence) next to what they have used."""
    from ..limits import consumption, effective_limits

    limits = effective_limits(user)
    used = consumption(user)
    scope = dict(RateLimit.Scope.choices).get(limits.scope or "", _("none: no limits"))
    rows = format_html_join(
        "",
        '<tr><th scope="row">{}</th><td>{}</td><td data-field="{}">{}</td><td>{}</td></tr>',
        (
            (
                RateLimit._meta.get_field(name).verbose_name,
                _shown(name, limits.as_dict()[name]),
                name,
                _shown(name, used[name]) if used[name] is not None else "0",
                PERIODS[name],
            )
            for name in RateLimit.LIMIT_FIELDS
        ),
    )
    return format_html(
        '<table class="streamchat-consumption"><caption>{}</caption><thead><tr>'
        '<th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th>'
        '<th scope="col">{}</th></tr></thead>'
        "<tbody>{}</tbody></table>",
        _("Applies to %(user)s now (decided by: %(scope)s)") % {"user": user, "scope": scope},
        _("limit"),
        _("applies"),
        _("used"),
        _("period"),
        rows,
    )


class ConsumptionMixin:
    @admin.display(description=_("used now"))
    def consumption_now(self, limit: RateLimit) -> str:
        if limit.user_id is None:
            return str(
                _("Consumption is per user: open a user's limits (or the user's page) to see it.")
            )
        return consumption_table(limit.user)


@admin.register(RateLimit)
class RateLimitAdmin(ConsumptionMixin, admin.ModelAdmin):
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
                "description": format_html(
                    "{} {}",
                    _("A user, or a group, or neither for the site default."),
                    EXPLAIN_PRECEDENCE,
                ),
            },
        ),
        (_("Limits (blank: no limit)"), {"fields": list(RateLimit.LIMIT_FIELDS)}),
        (_("Consumption"), {"fields": ["consumption_now"]}),
    ]
    readonly_fields = ["consumption_now"]

    def get_fieldsets(self, request: HttpRequest, obj: RateLimit | None = None) -> Any:
        return self.fieldsets if obj is not None else self.fieldsets[:2]

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        # A custom user model may have no "username": search its USERNAME_FIELD instead.
        return ["group__name", f"user__{get_user_model().USERNAME_FIELD}"]


class UserRateLimitInline(ConsumptionMixin, admin.StackedInline):
    """Limits on the user's own admin page, with what applies to the user and what they used."""

    model = RateLimit
    form = InlineRateLimitForm
    fk_name = "user"
    fields = [*RateLimit.LIMIT_FIELDS, "consumption_now"]
    readonly_fields = ["consumption_now"]
    extra = 1
    max_num = 1
    can_delete = True
    verbose_name = _("chat rate limits for this user")
    verbose_name_plural = _(
        "chat rate limits for this user (fill any field to give the user their own limits, "
        "which then replace their groups' and the site default; a blank field: no limit)"
    )


class GroupRateLimitInline(admin.StackedInline):
    model = RateLimit
    form = GroupRateLimitForm
    fk_name = "group"
    fields = list(RateLimit.LIMIT_FIELDS)
    extra = 1
    max_num = 1
    can_delete = True
    verbose_name = _("chat rate limits for this group")
    verbose_name_plural = _(
        "chat rate limits for this group (a member in several groups gets the most generous; "
        "a blank field: no limit)"
    )


def _with_inline(
    model: type[Model], inline: type[admin.options.InlineModelAdmin], site: admin.AdminSite
) -> bool:
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
    subclass = type(
        base.__name__, (base,), {"inlines": [*base.inlines, inline], "__module__": base.__module__}
    )
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
        logger.debug(
            "No admin for %s yet: the rate-limit inline was not added to it.", User._meta.label
        )
    return done
