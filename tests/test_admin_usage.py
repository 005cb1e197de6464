"""The usage ledger in admin: totals and CSV of the filtered rows match the rows; the dashboard."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from streamchat import crypto
from streamchat.admin.dashboard import DAYS, dashboard_context
from streamchat.admin.usage import CSV_COLUMNS
from streamchat.keys import key_hint
from streamchat.models import ApiKey, Usage

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:streamchat_usage_changelist"
EXPORT = "admin:streamchat_usage_export"


@pytest.fixture
def ledger(user_factory):
    """A varied ledger: 3 users, 3 models, 2 keys, every outcome, over 45 days."""
    users = [user_factory(username=name) for name in ("ann", "bob", "cy")]
    keys = [
        ApiKey.objects.create(
            label=f"k{n}",
            secret_encrypted=crypto.encrypt(f"sk-or-v1-{n:064x}"),
            hint=key_hint(f"sk-or-v1-{n:064x}"),
        )
        for n in (1, 2)
    ]
    models = ["openai/gpt-4o", "openai/gpt-4o-mini", "anthropic/claude-3.5-sonnet"]
    outcomes = [o.value for o in Usage.Outcome]
    now = timezone.now()
    rows = []
    for n in range(60):
        rows.append(
            Usage(
                user=users[n % 3] if n % 11 else None,
                api_key=keys[n % 2] if n % 7 else None,
                model_requested=models[n % 3],
                model_used=models[(n + (n % 5 == 0)) % 3],
                prompt_tokens=10 * n + 1,
                completion_tokens=n * n % 97,
                reasoning_tokens=n % 4,
                cost=Decimal(n) / Decimal(7000),
                outcome=outcomes[n % len(outcomes)],
                created=now - timedelta(days=n * 3 // 4, hours=n % 5),
            )
        )
    Usage.objects.bulk_create(rows)
    return {"users": users, "keys": keys, "models": models}


def read_csv(response) -> list[dict[str, str]]:
    body = b"".join(response.streaming_content).decode("utf-8")
    return list(csv.DictReader(io.StringIO(body)))


def filters(ledger) -> list[str]:
    ann, bob = ledger["users"][0], ledger["users"][1]
    week_ago = (timezone.localdate() - timedelta(days=7)).isoformat()
    return [
        "",
        f"?user__id__exact={ann.pk}",
        "?model=openai%2Fgpt-4o",
        f"?api_key__id__exact={ledger['keys'][1].pk}",
        "?outcome__exact=error",
        f"?created__gte={week_ago}+00%3A00%3A00%2B00%3A00",
        f"?user__id__exact={bob.pk}&outcome__exact=complete&model=openai%2Fgpt-4o-mini",
        "?q=claude",
        "?o=-5",
    ]


def test_totals_and_csv_match_the_filtered_rows(admin_client, ledger):
    for query in filters(ledger):
        page = admin_client.get(reverse(CHANGELIST) + query)
        assert page.status_code == 200, query
        changelist = page.context["cl"]
        rows = list(changelist.queryset)
        totals = page.context["totals"]
        expected = {
            "requests": len(rows),
            "tokens": sum(r.prompt_tokens + r.completion_tokens for r in rows),
            "cost": sum((r.cost for r in rows), Decimal(0)),
        }
        assert {k: totals[k] for k in expected} == expected, query
        assert changelist.result_count == len(rows)
        html = page.content.decode()
        assert f'data-total="requests">{len(rows)}<' in html
        assert f'data-total="tokens">{expected["tokens"]}<' in html

        exported = admin_client.get(reverse(EXPORT) + query)
        assert exported.status_code == 200 and exported["Content-Type"].startswith("text/csv")
        lines = read_csv(exported)
        assert list(lines[0]) == CSV_COLUMNS if lines else True
        assert [int(line["id"]) for line in lines] == [r.pk for r in rows], (
            query
        )  # same rows, same order
        assert sum(int(line["total_tokens"]) for line in lines) == expected["tokens"]
        assert sum(Decimal(line["cost"]) for line in lines) == expected["cost"]
    # The filters did filter.
    assert len({len(read_csv(admin_client.get(reverse(EXPORT) + q))) for q in filters(ledger)}) > 3


def test_export_link_carries_the_current_filters(admin_client, ledger):
    query = "?outcome__exact=error"
    html = admin_client.get(reverse(CHANGELIST) + query).content.decode()
    link = re.search(r'href="([^"]*export\.csv[^"]*)"', html).group(1)
    assert link.endswith(query)


def test_csv_cells_never_become_spreadsheet_formulas(admin_client, user):
    Usage.objects.create(
        user=user,
        model_requested='=HYPERLINK("http://x")',
        model_used="+1",
        outcome="error",
        error_code="@SUM(A1)",
    )
    line = read_csv(admin_client.get(reverse(EXPORT)))[0]
    assert line["model_requested"].startswith("'=")
    assert line["model_used"] == "'+1" and line["error_code"] == "'@SUM(A1)"


def test_bad_filter_in_export_goes_back_to_the_list(admin_client, ledger):
    response = admin_client.get(reverse(EXPORT) + "?nonsense__field=1")
    assert response.status_code == 302 and "e=1" in response["Location"]


def test_ledger_is_read_only(admin_client, ledger):
    row = Usage.objects.first()
    url = reverse("admin:streamchat_usage_change", args=[row.pk])
    assert admin_client.post(url, {"prompt_tokens": "0"}).status_code == 403
    response = admin_client.post(
        reverse(CHANGELIST),
        {"action": "delete_selected", "_selected_action": [row.pk], "index": "0"},
    )
    assert Usage.objects.filter(pk=row.pk).exists()
    assert response.status_code in (200, 302)


def test_dashboard_sums_the_last_30_days(admin_client, ledger):
    response = admin_client.get(reverse("admin:streamchat_usage_dashboard"))
    assert response.status_code == 200
    context = response.context
    start = timezone.make_aware(
        timezone.datetime.combine(
            timezone.localdate() - timedelta(days=DAYS - 1), timezone.datetime.min.time()
        )
    )
    rows = list(Usage.objects.filter(created__gte=start))
    assert 0 < len(rows) < Usage.objects.count()  # older rows fall outside the window
    totals = context["totals"]
    assert totals["requests"] == len(rows)
    assert totals["tokens"] == sum(r.prompt_tokens + r.completion_tokens for r in rows)
    assert totals["cost"] == sum((r.cost for r in rows), Decimal(0))
    assert totals["errors"] == sum(r.outcome not in ("complete", "stopped") for r in rows)

    chart = context["token_chart"]
    assert len(chart.bars) == DAYS and len(context["cost_chart"].bars) == DAYS
    by_day: dict[str, int] = {}
    for r in rows:
        day = timezone.localtime(r.created).date().isoformat()
        by_day[day] = by_day.get(day, 0) + r.prompt_tokens + r.completion_tokens
    for bar in chart.bars:
        day = bar.title.split(":")[0]
        assert (bar.height > 0) == (by_day.get(day, 0) > 0), day
    tallest = max(chart.bars, key=lambda b: b.height)
    assert tallest.title.split(":")[0] == max(by_day, key=by_day.get)

    top_users = context["top_users"]
    costs = [u["cost"] for u in top_users]
    assert costs == sorted(costs, reverse=True) and {u["name"] for u in top_users} == {
        "ann",
        "bob",
        "cy",
    }
    assert sum(u["requests"] for u in top_users) == sum(r.user_id is not None for r in rows)
    top_models = context["top_models"]
    assert {m["model_used"] for m in top_models} == {r.model_used for r in rows}
    html = response.content.decode()
    assert html.count("<rect") == 2 * DAYS and "<svg" in html and "Top users" in html


def test_dashboard_with_no_usage_renders_empty_charts(admin_client):
    response = admin_client.get(reverse("admin:streamchat_usage_dashboard"))
    assert response.status_code == 200
    assert "No usage in this period." in response.content.decode()
    assert all(bar.height == 0 for bar in response.context["token_chart"].bars)


def test_dashboard_context_accepts_a_queryset(ledger):
    ann = ledger["users"][0]
    context = dashboard_context(Usage.objects.filter(user=ann))
    assert [u["name"] for u in context["top_users"]] == ["ann"]
