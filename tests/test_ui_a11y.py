"""Accessibility audit with axe-core in Chromium: the chat page (empty, and with a streamed reply;
desktop and phone; light and dark), the tokens page, and streamchat's admin pages (changelists, a
change form, the usage dashboard). Zero serious or critical violations.

axe-core is vendored for the tests only (tests/vendor/axe-core/, see tests/axe.py). Screenshots of
the audited states go to test-artifacts/.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.test import Client

from streamchat.models import (
    ApiKey,
    ChatModel,
    Conversation,
    Message,
    PersonalToken,
    RateLimit,
    Usage,
)
from tests.axe import audit, describe
from tests.services import chromium
from tests.ui_contexts import DRAWER_STILL, open_page

pytestmark = [pytest.mark.browser, pytest.mark.once, pytest.mark.django_db(transaction=True)]

REPLY = ".sc-msg--assistant"


class Findings:
    """Violations per audited state, so one run reports every state's, not only the first's."""

    def __init__(self) -> None:
        self.found: dict[str, str] = {}

    def check(self, page: Any, where: str, **options: Any) -> None:
        violations = audit(page, **options)
        if violations:
            self.found[where] = describe(violations)

    def assert_none(self) -> None:
        assert not self.found, "axe found:\n" + "\n".join(
            f"- {where}:\n{text}" for where, text in self.found.items()
        )


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize("size", ["desktop", "mobile"])
def test_chat_page_has_no_serious_violations(
    browser: Any,
    live_daphne: Any,
    browser_events: Any,
    login: Any,
    user: Any,
    screenshot: Any,
    size: str,
    theme: str,
) -> None:
    ChatModel.objects.create(
        model_id="openai/gpt-4o-mini", display_name="GPT-4o mini", enabled=True, is_default=True
    )
    axe = Findings()
    page = open_page(browser, live_daphne.url, browser_events, size=size, color_scheme=theme)
    login(page, user)
    assert page.get_attribute("html", "data-sc-theme") == theme
    axe.check(page, f"the empty chat ({size}, {theme})")
    screenshot(page, "empty")

    page.fill("#sc-input", "Hello, show me **Markdown** and code")
    page.press("#sc-input", "Enter")
    page.locator(f'{REPLY}[data-status="complete"]').wait_for(timeout=15_000)
    axe.check(page, f"a conversation with a streamed reply ({size}, {theme})")
    assert "{#" not in page.inner_text("body")  # a template comment shown as text
    screenshot(page, "conversation")

    # On a phone the conversation drawer; the shortcuts dialog (at the foot of the sidebar).
    if size == "mobile":
        page.click("#sc-open-sidebar")
        page.locator("#sc-sidebar").wait_for(state="visible")
        page.wait_for_function(DRAWER_STILL)
        axe.check(page, f"the open drawer ({theme})")
        screenshot(page, "drawer")
    page.click("#sc-help-open")
    page.locator("#sc-help-dialog[open]").wait_for()
    axe.check(page, f"the shortcuts dialog ({size}, {theme})")
    screenshot(page, "shortcuts")
    page.keyboard.press("Escape")
    axe.assert_none()
    assert browser_events.page_errors == [] and browser_events.console_errors == []


@pytest.mark.parametrize("size", ["desktop", "mobile"])
def test_tokens_page_has_no_serious_violations(
    browser: Any,
    live_daphne: Any,
    browser_events: Any,
    login: Any,
    user: Any,
    screenshot: Any,
    size: str,
) -> None:
    axe = Findings()
    page = open_page(browser, live_daphne.url, browser_events, size=size)
    login(page, user, next="/chat/tokens/")
    page.fill("#id_name", "laptop")
    with page.expect_navigation():
        page.click("button[type=submit]")
    page.locator("#sc-new-token").wait_for()
    axe.check(page, f"the tokens page with a new token ({size})")
    screenshot(page, "tokens")
    page.click("a.sc-stop")
    page.wait_for_load_state("load")
    axe.check(page, f"the revoke confirmation ({size})")
    for theme in ("dark",):
        page.emulate_media(color_scheme=theme)
        page.goto("/chat/tokens/")
        axe.check(page, f"the tokens page ({size}, {theme})")
        screenshot(page, f"tokens-{theme}")
    axe.assert_none()


# --- admin ---------------------------------------------------------------------------------------

# Findings in markup of Django's own admin (its templates and admin/css/base.css, not streamchat's),
# which streamchat cannot fix without overriding Django's templates: excluded on admin pages only,
# by rule id and only inside the part of the page Django draws. The same rule still applies to
# streamchat's own admin markup (its dashboard, its changelist templates).
DJANGO_ADMIN_EXCLUSIONS: dict[str, tuple[str, str]] = {
    # Django's breadcrumbs are white links in light-blue text on the header bar, not underlined.
    "link-in-text-block": (".breadcrumbs", "Django's breadcrumb bar (admin/css/base.css)"),
    # Django's changelist filter links are 20 px high lines in a list (admin/css/changelists.css).
    "target-size": ("#changelist-filter", "Django's changelist filter sidebar"),
}


@pytest.fixture
def admin_page(
    live_server: Any, user_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """Chromium logged in to admin as a superuser, on pytest-django's live server (which serves
    admin's static files; a bare Daphne does not)."""
    staff = user_factory(username="a11y-admin", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(staff)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    own = urlsplit(live_server.url)
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with chromium() as browser:
        context = browser.new_context(
            base_url=live_server.url, viewport={"width": 1280, "height": 800}
        )
        context.set_default_timeout(10_000)
        context.add_cookies(
            [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}]
        )
        context.route(
            "**/*",
            lambda route: (
                route.continue_()
                if urlsplit(route.request.url).netloc in (own.netloc, "")
                else route.abort()
            ),
        )
        page = context.new_page()
        page.staff = staff
        yield page


def test_admin_pages_have_no_serious_violations(admin_page: Any, screenshot: Any) -> None:
    axe = Findings()
    page = admin_page
    staff = page.staff
    conversation = Conversation.objects.create(owner=staff, title="Trip plans", model="x/y")
    message = Message.objects.create(conversation=conversation, role="user", content="Hi")
    Message.objects.create(
        conversation=conversation, parent=message, role="assistant", content="Hello"
    )
    model = ChatModel.objects.create(model_id="openai/gpt-4o", enabled=True, is_default=True)
    Usage.objects.create(
        user=staff, model_requested="openai/gpt-4o", model_used="openai/gpt-4o", outcome="complete"
    )
    pages = [
        "/admin/streamchat/",
        "/admin/streamchat/usage/dashboard/",
        "/admin/streamchat/usage/",
        "/admin/streamchat/conversation/",
        f"/admin/streamchat/conversation/{conversation.pk}/change/",
        "/admin/streamchat/message/",
        "/admin/streamchat/chatmodel/",
        f"/admin/streamchat/chatmodel/{model.pk}/change/",
        "/admin/streamchat/apikey/",
        "/admin/streamchat/apikey/add/",
        "/admin/streamchat/ratelimit/",
        "/admin/streamchat/ratelimit/add/",
        "/admin/streamchat/personaltoken/",
    ]
    assert ApiKey and RateLimit and PersonalToken  # every streamchat model with an admin page
    for url in pages:
        response = page.goto(url)
        assert response.status == 200, url
        axe.check(page, url, exclude=DJANGO_ADMIN_EXCLUSIONS)
    screenshot(page, "admin")
    axe.assert_none()
