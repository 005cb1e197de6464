"""Rate limits in admin: the precedence table (RL-10), the limit form, the inlines on the user and
group pages, and the consumption shown next to each limit."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from streamchat.admin import GroupRateLimitInline, UserRateLimitInline, add_limits_inlines
from streamchat.limits import effective_limits
from streamchat.models import RateLimit
from streamchat.pricing import usd

pytestmark = pytest.mark.django_db

ADD = "admin:streamchat_ratelimit_add"
FIELDS = RateLimit.LIMIT_FIELDS
BLANK = dict.fromkeys(FIELDS, "")


def post_limit(client, *, user=None, group=None, **values):
    data = {**BLANK, "user": user.pk if user else "", "group": group.pk if group else ""}
    data.update({k: str(v) for k, v in values.items()})
    return client.post(reverse(ADD), data)


# Each case: the site default, the user's groups' rows, the user's own row (None: no row), and
# the limits that must apply (fields not named are unlimited) with the scope that decided.
RL10_CASES = {
    "nothing: unlimited": (None, [], None, {}, None),
    "default only": ({"requests_per_minute": 10}, [], None, {"requests_per_minute": 10}, "default"),
    "group beats default, even when stricter": (
        {"requests_per_minute": 10, "tokens_per_day": 5000},
        [{"requests_per_minute": 3}],
        None,
        {"requests_per_minute": 3},
        "group",
    ),
    "two groups: most generous per field, blank is unlimited": (
        {"requests_per_minute": 1},
        [
            {"requests_per_minute": 5, "tokens_per_day": 1000, "spend_per_month": "2.5"},
            {"requests_per_minute": 8, "spend_per_month": "1.25", "concurrent_streams": 2},
        ],
        None,
        {"requests_per_minute": 8, "spend_per_month": Decimal("2.5")},
        "group",
    ),
    "user beats groups and default, blank fields unlimited": (
        {"requests_per_minute": 10},
        [{"requests_per_minute": 20, "requests_per_day": 100}],
        {"requests_per_minute": 1},
        {"requests_per_minute": 1},
        "user",
    ),
    "user row may be more generous than the default": (
        {"concurrent_streams": 1},
        [],
        {"concurrent_streams": 4, "requests_per_day": 50},
        {"concurrent_streams": 4, "requests_per_day": 50},
        "user",
    ),
}


@pytest.mark.parametrize(
    ("default", "groups", "own", "expected", "scope"), RL10_CASES.values(), ids=RL10_CASES.keys()
)
def test_rl10_limits_resolve_user_then_groups_then_default(
    admin_client, user_factory, default, groups, own, expected, scope
):
    user = user_factory()
    bystander = user_factory()  # has none of these groups or rows
    if default is not None:
        assert post_limit(admin_client, **default).status_code == 302
    for n, values in enumerate(groups):
        group = Group.objects.create(name=f"g{n}")
        user.groups.add(group)
        assert post_limit(admin_client, group=group, **values).status_code == 302
    if own is not None:
        assert post_limit(admin_client, user=user, **own).status_code == 302

    limits = effective_limits(user)
    want = {name: expected.get(name) for name in FIELDS}
    assert limits.as_dict() == want
    assert limits.scope == scope
    assert effective_limits(bystander).as_dict() == {
        name: (default or {}).get(name) for name in FIELDS
    }
    # The user's limit page (and the inline on the user's page) show the same resolution.
    page = admin_client.get(reverse("admin:auth_user_change", args=[user.pk])).content.decode()
    for name in FIELDS:
        shown = want[name]
        if shown is None:
            text = "no limit"
        elif name == "spend_per_month":
            text = usd(shown)
        else:
            text = str(shown)
        assert f"<td>{text}</td>" in page.split(f'data-field="{name}"')[0].rsplit("<tr>", 1)[1]


def test_scope_follows_from_the_target(admin_client, user_factory):
    user, group = user_factory(), Group.objects.create(name="g")
    post_limit(admin_client, requests_per_minute=1)
    post_limit(admin_client, group=group, requests_per_minute=2)
    post_limit(admin_client, user=user, requests_per_minute=3)
    assert sorted(RateLimit.objects.values_list("scope", "requests_per_minute")) == [
        ("default", 1),
        ("group", 2),
        ("user", 3),
    ]


def test_form_refuses_two_targets_and_a_second_default(admin_client, user_factory):
    response = post_limit(admin_client, user=user_factory(), group=Group.objects.create(name="g"))
    assert response.status_code == 200 and "not both" in response.content.decode()
    assert post_limit(admin_client, requests_per_minute=1).status_code == 302
    response = post_limit(admin_client, requests_per_minute=2)
    assert response.status_code == 200 and "already a site default" in response.content.decode()
    assert RateLimit.objects.count() == 1
    # Editing the existing default is fine.
    default = RateLimit.objects.get()
    data = {**BLANK, "user": "", "group": "", "requests_per_minute": "5"}
    url = reverse("admin:streamchat_ratelimit_change", args=[default.pk])
    assert admin_client.post(url, data).status_code == 302
    default.refresh_from_db()
    assert default.requests_per_minute == 5


def test_limit_page_shows_consumption_next_to_each_limit(admin_client, user_factory):
    from streamchat.limits import reserve, settle

    user = user_factory()
    post_limit(admin_client, user=user, requests_per_day=10, tokens_per_day=1000)
    reservation = reserve(
        user,
        model="openai/gpt-4o",
        prompt_tokens=5,
        max_tokens=20,
        prompt_price=None,
        completion_price=None,
        source="websocket",
    )
    settle(reservation, prompt_tokens=5, completion_tokens=7, cost=Decimal("0.01"))
    row = RateLimit.objects.get(user=user)
    page = admin_client.get(reverse("admin:streamchat_ratelimit_change", args=[row.pk]))
    text = page.content.decode()
    assert page.status_code == 200
    assert 'data-field="requests_per_day">1<' in text
    assert 'data-field="tokens_per_day">12<' in text
    assert 'data-field="spend_per_month">$0.01<' in text
    group_row = RateLimit.objects.create(scope="group", group=Group.objects.create(name="g"))
    page = admin_client.get(reverse("admin:streamchat_ratelimit_change", args=[group_row.pk]))
    assert "Consumption is per user" in page.content.decode()


def user_form(user, **inline):
    """The user admin's change form as a browser would post it, plus the limits inline."""
    joined = timezone.localtime(user.date_joined)
    data = {
        "username": user.username,
        "first_name": "",
        "last_name": "",
        "email": "",
        "is_active": "on",
        "date_joined_0": joined.strftime("%Y-%m-%d"),
        "date_joined_1": joined.strftime("%H:%M:%S"),
        "initial-date_joined_0": joined.strftime("%Y-%m-%d"),
        "initial-date_joined_1": joined.strftime("%H:%M:%S"),
        "streamchat_limit-TOTAL_FORMS": "1",
        "streamchat_limit-INITIAL_FORMS": "0",
        "streamchat_limit-MIN_NUM_FORMS": "0",
        "streamchat_limit-MAX_NUM_FORMS": "1",
        "streamchat_limit-0-id": "",
        "streamchat_limit-0-user": str(user.pk),
    }
    for name in FIELDS:
        data[f"streamchat_limit-0-{name}"] = str(inline.get(name, ""))
    return data


def test_limits_editable_inline_on_the_user_page(admin_client, user_factory):
    user = user_factory()
    url = reverse("admin:auth_user_change", args=[user.pk])
    page = admin_client.get(url).content.decode()
    assert "Chat rate limits for this user" in page
    response = admin_client.post(url, user_form(user, requests_per_minute=4, spend_per_month="1.5"))
    assert response.status_code == 302, response.context and response.context["errors"]
    row = RateLimit.objects.get(user=user)
    assert (row.scope, row.requests_per_minute, row.spend_per_month) == ("user", 4, Decimal("1.5"))
    assert effective_limits(user).requests_per_minute == 4
    # Leaving the inline blank on another user creates nothing.
    other = user_factory()
    admin_client.post(reverse("admin:auth_user_change", args=[other.pk]), user_form(other))
    assert not RateLimit.objects.filter(user=other).exists()


def test_limits_editable_inline_on_the_group_page(admin_client):
    group = Group.objects.create(name="team")
    url = reverse("admin:auth_group_change", args=[group.pk])
    assert "Chat rate limits for this group" in admin_client.get(url).content.decode()
    data = {
        "name": "team",
        "streamchat_limit-TOTAL_FORMS": "1",
        "streamchat_limit-INITIAL_FORMS": "0",
        "streamchat_limit-MIN_NUM_FORMS": "0",
        "streamchat_limit-MAX_NUM_FORMS": "1",
        "streamchat_limit-0-id": "",
        "streamchat_limit-0-group": str(group.pk),
        **{f"streamchat_limit-0-{name}": "" for name in FIELDS},
        "streamchat_limit-0-tokens_per_day": "999",
    }
    assert admin_client.post(url, data).status_code == 302
    row = RateLimit.objects.get(group=group)
    assert (row.scope, row.tokens_per_day) == ("group", 999)


def test_inline_is_added_once_and_only_to_registered_admins():
    user_admin = admin.site._registry[get_user_model()]
    assert UserRateLimitInline in user_admin.inlines
    assert GroupRateLimitInline in admin.site._registry[Group].inlines
    before = type(user_admin)
    assert add_limits_inlines() == {"user": True, "group": True}
    assert type(admin.site._registry[get_user_model()]) is before  # not wrapped twice
    # A site without a user admin (e.g. a custom user model with none) is left alone.
    bare = admin.AdminSite(name="bare")
    assert add_limits_inlines(bare) == {"user": False, "group": False}
    assert not bare.is_registered(get_user_model())
