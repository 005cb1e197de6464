"""In headless Chromium against Daphne: the tokens page (a reload after "Make token" makes no
second token; Revoke asks first), the conversation header's Export menu (downloads follow the open
conversation), the favicon, and no request of the chat page answering 404.

Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streamchat.models import ChatModel, Conversation, Message, PersonalToken

pytestmark = [pytest.mark.browser, pytest.mark.once, pytest.mark.django_db(transaction=True)]


def test_tokens_page_reload_makes_no_second_token_and_revoke_asks_first(
    page: Any, login: Any, user: Any, screenshot: Any, browser_events: Any
) -> None:
    login(page, user, next="/chat/tokens/")
    page.fill("#id_name", "laptop")
    with page.expect_navigation():
        page.click("button:has-text('Make token')")
    token = page.input_value("#sc-new-token")
    assert token.startswith("sc-")
    screenshot(page, "new-token")
    assert PersonalToken.objects.filter(user=user).count() == 1
    page.reload()  # the GET the redirect led to: no form is sent again
    assert PersonalToken.objects.filter(user=user).count() == 1
    assert page.locator("#sc-new-token").count() == 0 and token not in page.content()
    # Revoke leads to a question, not to a revoked token.
    with page.expect_navigation():
        page.click("a[aria-label='Revoke laptop']")
    assert page.url.endswith("/revoke/")
    screenshot(page, "revoke-confirm")
    assert PersonalToken.objects.get(user=user).revoked is None
    with page.expect_navigation():
        page.click("#sc-revoke-cancel")
    assert PersonalToken.objects.get(user=user).revoked is None
    with page.expect_navigation():
        page.click("a[aria-label='Revoke laptop']")
    with page.expect_navigation():
        page.click("#sc-revoke-confirm")
    assert page.url.endswith("/chat/tokens/")
    assert PersonalToken.objects.get(user=user).revoked is not None
    assert page.locator("tr[data-status='revoked']").count() == 1
    assert not browser_events.dialogs and not browser_events.page_errors
    assert not browser_events.console_errors


def test_export_menu_downloads_the_open_conversation_and_nothing_404s(
    page: Any, login: Any, user: Any, screenshot: Any, browser_events: Any, tmp_path: Path
) -> None:
    ChatModel.objects.create(model_id="openai/gpt-4o-mini", enabled=True, is_default=True)
    conversation = Conversation.objects.create(owner=user, title="Pelicans", model="openai/gpt-4o")
    question = Message.objects.create(conversation=conversation, role="user", content="Hi")
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        parent=question,
        content="Hello **there**",
        model="openai/gpt-4o",
        status="complete",
    )
    failed: list[str] = []
    page.on(
        "response",
        lambda response: failed.append(f"{response.status} {response.url}")
        if response.status >= 400
        else None,
    )
    login(page, user, next=f"/chat/c/{conversation.pk}/")
    page.locator(".sc-msg--assistant").wait_for()
    menu = page.locator("#sc-export")
    assert menu.is_visible()
    page.click("#sc-export summary")
    screenshot(page, "export-menu")
    with page.expect_download() as markdown:
        page.click("#sc-export a[data-format='md']")
    text = Path(markdown.value.path()).read_text()
    assert markdown.value.suggested_filename == f"streamchat-{conversation.pk}-pelicans.md"
    assert text.startswith("# Pelicans\n") and "Hello **there**" in text
    page.click("#sc-export summary")
    with page.expect_download() as document:
        page.click("#sc-export a[data-format='json']")
    data = json.loads(Path(document.value.path()).read_text())
    assert data["id"] == conversation.pk and len(data["messages"]) == 2
    # A new chat has nothing to export; back to the conversation, the menu is back.
    page.click("#sc-new")
    page.wait_for_function("() => document.getElementById('sc-export').hidden")
    page.go_back()
    page.wait_for_function("() => !document.getElementById('sc-export').hidden")
    # The favicon is the page's own static file.
    icon = page.get_attribute("link[rel=icon]", "href")
    assert icon and page.request.get(icon).status == 200
    assert page.request.get("/favicon.ico").status == 200  # pages with no link, like admin's
    assert not failed, failed
    assert not browser_events.console_errors and not browser_events.page_errors
