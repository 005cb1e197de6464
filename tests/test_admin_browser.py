"""The usage dashboard in real Chromium: a screenshot for the artifacts, and admin pages that show
user-supplied strings run none of them (XSS-18).

Served by pytest-django's ``live_server`` (it serves admin's static files, which a bare Daphne does
not), logged in by handing Chromium a staff session cookie made with the test client.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from streamchat.models import Conversation, Message, Usage
from tests.services import chromium

pytestmark = [pytest.mark.once, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

PAYLOAD = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>'


def fill_ledger(users) -> None:
    now = timezone.now()
    models = ["openai/gpt-4o", "anthropic/claude-3.5-sonnet", "openai/gpt-4o-mini", f"x/{PAYLOAD}"]
    rows = []
    for day in range(30):
        for n in range(1 + (day * 7) % 5):
            prompt, completion = 200 + 37 * n + 11 * day, 400 + 53 * ((day + n) % 9)
            rows.append(
                Usage(
                    user=users[(day + n) % len(users)],
                    model_requested=models[(day + n) % len(models)],
                    model_used=models[(day + n) % len(models)],
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    cost=Decimal(prompt * 3 + completion * 15) / Decimal(1_000_000),
                    outcome="complete" if (day + n) % 6 else "error",
                    created=now - timedelta(days=day, minutes=n),
                )
            )
    Usage.objects.bulk_create(rows)


class Events:
    def __init__(self) -> None:
        self.dialogs: list[str] = []
        self.foreign_requests: list[str] = []
        self.page_errors: list[str] = []
        self.missing: list[str] = []


@pytest.fixture
def staff_page(
    live_server: Any, user_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """``(page, events, staff)``: Chromium logged in to admin on the live server as a superuser."""
    staff = user_factory(username="admin-viewer", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(staff)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    own = urlsplit(live_server.url)
    events = Events()
    # Playwright's sync API runs an event loop in this thread; the test's ORM calls stay sync.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with chromium() as browser:
        context = browser.new_context(
            base_url=live_server.url, viewport={"width": 1280, "height": 900}
        )
        context.set_default_timeout(10_000)
        context.add_cookies(
            [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}]
        )

        def guard(route: Any) -> None:
            url = urlsplit(route.request.url)
            if url.scheme in ("data", "blob", "about") or url.netloc == own.netloc:
                route.continue_()
            else:
                events.foreign_requests.append(route.request.url)
                route.abort()

        context.route("**/*", guard)
        page = context.new_page()

        def on_dialog(dialog: Any) -> None:
            events.dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)
        page.on("pageerror", lambda error: events.page_errors.append(str(error)))
        page.on(
            "response",
            lambda response: (
                events.missing.append(response.url) if response.status >= 400 else None
            ),
        )
        try:
            yield page, events, staff
        finally:
            browser.close()


def test_xss18_usage_dashboard_screenshot_and_no_script_runs(staff_page, user_factory):
    page, events, staff = staff_page
    users = [staff, user_factory(username="ann"), user_factory(username=f"eve{PAYLOAD}"[:150])]
    fill_ledger(users)
    conversation = Conversation.objects.create(owner=users[2], title=PAYLOAD, model=PAYLOAD)
    Message.objects.create(conversation=conversation, role="assistant", content=PAYLOAD)

    page.goto("/admin/streamchat/usage/dashboard/")
    page.wait_for_selector(".streamchat-chart svg rect")
    assert page.locator(".streamchat-chart").count() == 2
    assert page.locator(".streamchat-chart svg rect.bar").count() == 60
    assert "ann" in page.inner_text(".streamchat-tops")
    # Styled: admin's and streamchat's stylesheets loaded (bars take admin's primary colour).
    fill = page.eval_on_selector(".streamchat-chart rect.bar", "e => getComputedStyle(e).fill")
    assert fill not in ("", "rgb(0, 0, 0)"), fill
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "admin-usage-dashboard.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000

    for url in (
        "/admin/streamchat/usage/",
        "/admin/streamchat/conversation/",
        f"/admin/streamchat/conversation/{conversation.pk}/change/",
        "/admin/streamchat/message/",
    ):
        page.goto(url)
        page.wait_for_load_state("load")
        assert page.evaluate("typeof window.__pwned") == "undefined", url
    # The payloads are shown as text.
    assert PAYLOAD in page.inner_text("#result_list")
    assert events.dialogs == []
    assert events.foreign_requests == []
    assert events.page_errors == []
    assert events.missing == []
