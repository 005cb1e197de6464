"""Money is printed by one function, ``streamchat.pricing.usd``: true at any size, so a sub-cent
budget or cost never reads "$0.00" (admin pages, refusal messages, the dashboard, the chat page)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from streamchat.pricing import usd


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (0, "$0.00"),
        (Decimal("0.0000000000"), "$0.00"),
        (Decimal("0.5"), "$0.50"),
        (25, "$25.00"),
        (Decimal("0.005"), "$0.005"),  # a half-cent budget
        (Decimal("0.0001"), "$0.0001"),
        (Decimal("0.0017"), "$0.0017"),
        ("0.0000123", "$0.0000123"),
        (Decimal("0.0001234567891"), "$0.0001234568"),  # the ledger's 10 places
        (Decimal("1E-12"), "$0.000000000001"),  # smaller than the ledger: still not $0
        (Decimal("1234.5678"), "$1,234.5678"),
        (0.1 + 0.2, "$0.30"),  # a float sum prints as the decimal it stands for
        (Decimal("-0.004"), "-$0.004"),
        ("nonsense", "?"),
        (float("nan"), "?"),
    ],
)
def test_usd_is_exact_with_at_least_two_decimals(amount, shown):
    assert usd(amount) == shown


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (Decimal("0.00123456"), "$0.00123"),
        (Decimal("1234.5678"), "$1,234.57"),  # never below cents
        (Decimal("0.5"), "$0.50"),
        (Decimal("0.000000001"), "$0.000000001"),
    ],
)
def test_usd_with_significant_digits_rounds_but_never_to_zero(amount, shown):
    assert usd(amount, significant=3) == shown


@pytest.mark.parametrize("amount", ["0.001", "0.0049", "0.000001", "1e-10"])
def test_no_sub_cent_amount_reads_zero(amount):
    for significant in (None, 1, 2, 3):
        assert usd(Decimal(amount), significant=significant) not in ("$0.00", "$0", "$0.0")


# -- Every page and message that prints money ----------------------------------------------------

SUB_CENT_BUDGET = Decimal("0.004")
SUB_CENT_COST = Decimal("0.0003")


@pytest.mark.django_db
def test_sub_cent_amounts_are_printed_true_on_every_admin_page(admin_client, user_factory):
    from django.urls import reverse

    from streamchat.models import Conversation, Message, RateLimit, Usage

    user = user_factory(username="penny")
    RateLimit.objects.create(scope="user", user=user, spend_per_month=SUB_CENT_BUDGET)
    conversation = Conversation.objects.create(owner=user, title="cheap")
    question = Message.objects.create(conversation=conversation, role="user", content="hi")
    Usage.objects.create(
        user=user,
        message=question,
        model_used="openai/gpt-4o-mini",
        prompt_tokens=1,
        completion_tokens=2,
        cost=SUB_CENT_COST,
        outcome="complete",
    )
    # The limit pages count from reservations: one settled at the same cost.
    from streamchat import limits

    reservation = limits.reserve(
        user,
        model="openai/gpt-4o-mini",
        prompt_tokens=1,
        max_tokens=2,
        prompt_price=None,
        completion_price=None,
        source="python",
    )
    limits.settle(reservation, prompt_tokens=1, completion_tokens=2, cost=SUB_CENT_COST)
    pages = {
        "user's limits": reverse("admin:auth_user_change", args=[user.pk]),
        "limit row": reverse(
            "admin:streamchat_ratelimit_change", args=[RateLimit.objects.get().pk]
        ),
        "usage list": reverse("admin:streamchat_usage_changelist"),
        "usage row": reverse("admin:streamchat_usage_change", args=[Usage.objects.get().pk]),
        "dashboard": reverse("admin:streamchat_usage_dashboard"),
        "conversations": reverse("admin:streamchat_conversation_changelist"),
    }
    for name, url in pages.items():
        response = admin_client.get(url)
        html = response.content.decode()
        # (A true zero, e.g. a chart's bottom tick, is "$0.00"; the old formats are gone.)
        assert "$0.0000<" not in html and "0.000000<" not in html, name
        if name == "dashboard":
            ticks = [tick.label for tick in response.context["cost_chart"].ticks]
            assert ticks[0] == "$0.00" and "$0.00" not in ticks[1:], ticks
        if name == "user's limits" or name == "limit row":
            assert 'data-field="spend_per_month">$0.0003<' in html, name  # spent
            assert f">{usd(SUB_CENT_BUDGET)}<" in html and "$0.004" in html, name  # the budget
        elif name != "usage row":
            assert ">$0.0003<" in html, name
    assert str(Usage.objects.get()).endswith("3 tokens, $0.0003")


@pytest.mark.django_db
def test_a_refusal_names_a_sub_cent_budget_truly(user_factory):
    from streamchat import limits
    from streamchat.models import RateLimit

    user = user_factory()
    RateLimit.objects.create(scope="user", user=user, spend_per_month=SUB_CENT_BUDGET)
    send = {
        "model": "openai/gpt-4o-mini",
        "prompt_tokens": 100,
        "prompt_price": Decimal("1"),
        "completion_price": Decimal("4"),
        "source": "python",
    }
    with pytest.raises(limits.LimitExceeded) as too_large:
        limits.reserve(user, max_tokens=2000, **send)  # $0.0081 at most: more than the budget
    assert "$0.0081" in too_large.value.message and "$0.004" in too_large.value.message
    limits.reserve(user, max_tokens=900, **send)  # $0.0037: fits
    with pytest.raises(limits.LimitExceeded) as reached:
        limits.reserve(user, max_tokens=900, **send)
    assert "$0.0037 of $0.004" in reached.value.message
    assert "$0.00 " not in reached.value.message + too_large.value.message


# -- The chat page prints costs with the same rule ----------------------------------------------

TEXT_JS = Path(__file__).resolve().parent.parent / "streamchat/static/streamchat/chat/text.js"


@pytest.mark.browser
def test_the_chat_pages_format_cost_follows_pricing_usd():
    from tests.services import chromium

    source = TEXT_JS.read_text()
    start = source.index("export function formatCost(cost) {") + len("export ")
    end = source.index("\n}\n", start) + len("\n}\n")
    # The function alone, outside its module, with English for gettext().
    function = "const gettext = (text) => text; " + source[start:end]
    amounts = ["0", "0.0003", "0.5", "25", "1234.5678", "0.0000000001", "0.0017000000", "0E-10"]
    with chromium() as browser:
        page = browser.new_page()
        shown = page.evaluate(
            f"(amounts) => {{ {function}; return amounts.map(formatCost); }}", amounts
        )
        assert page.evaluate(f"() => {{ {function}; return formatCost(null); }}") == (
            "cost unknown"
        )
    assert shown == [usd(Decimal(amount)) for amount in amounts]
