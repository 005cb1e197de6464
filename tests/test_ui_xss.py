"""Model output, user text, titles and model names rendered inert in Chromium (XSS-01/02/04/07/14).

Each payload family reaches the page the ways it can: streamed by the simulator as a reply (split
across many deltas, and in a few large ones), typed as a user message, set as a conversation title
(from the first message and by renaming), and as a model's display name. Pass: nothing runs
(``window.__pwned`` stays unset), no dialog, no request to another origin, no navigation, no live
markup in the messages, and the text that was text stays visible.

The page's CSP would block most of this on its own; the assertions on the DOM check that the
sanitiser does not rely on it.
"""

from __future__ import annotations

from typing import Any

import pytest

from streamchat.models import ChatModel, Conversation, Message
from streamchat.simulator.replies import XSS_REPLY

pytestmark = [pytest.mark.browser, pytest.mark.once, pytest.mark.django_db(transaction=True)]

REPLY = ".sc-msg--assistant"
# Markup that must never be live in what the chat shows (messages, sidebar, header).
SHOWN = "#sc-messages, #sc-sidebar, .sc-header"
FORBIDDEN = (
    "script, iframe, object, embed, form, base, meta, style, link, svg, math, img, "
    "[onerror], [onload], [onmouseover], [onclick], [style], a[href^='javascript' i]"
)
# One line per family, payload first, so a title taken from the first message carries it.
TITLE_PAYLOAD = (
    "<img src=x onerror=\"window.__pwned='title'\"><script>window.__pwned='title2'</script>"
    "[t](javascript:window.__pwned='title3')"
)
PAYLOAD_MARKERS = ("<script>", "onerror=", "javascript:", "<iframe", "<style>")


def enable(model_id: str, name: str = "") -> ChatModel:
    return ChatModel.objects.create(
        model_id=model_id, display_name=name, enabled=True, is_default=True
    )


def send(page: Any, text: str) -> None:
    page.fill("#sc-input", text)
    page.press("#sc-input", "Enter")


def wait_finished(page: Any, timeout: float = 20_000) -> Any:
    page.locator(f'{REPLY}[data-status="complete"]').last.wait_for(timeout=timeout)
    return page.locator(REPLY).last


def assert_inert(page: Any, events: Any) -> None:
    # Give handlers (onerror of a failed image, a refresh) the chance to fire first.
    page.wait_for_timeout(300)
    page.locator(f"{REPLY} .sc-body").first.hover()
    assert page.evaluate("window.__pwned") is None
    assert events.dialogs == []
    assert events.foreign_requests == []
    assert events.page_errors == []
    live = page.evaluate(
        "([shown, forbidden]) => Array.from(document.querySelectorAll(shown))"
        ".flatMap(root => Array.from(root.querySelectorAll(forbidden)))"
        ".filter(el => !el.closest('form.sc-search, .sc-sidebar-foot form'))"
        ".map(el => el.outerHTML)",
        [SHOWN, FORBIDDEN],
    )
    assert live == []
    assert page.evaluate("document.querySelectorAll('base, meta[http-equiv]').length") == 0
    for link in page.locator("#sc-messages a[href]").all():
        assert link.get_attribute("rel") == "noopener noreferrer nofollow"
        assert link.get_attribute("href").lower().startswith(("http:", "https:", "mailto:", "/"))
    assert "/chat/" in page.url


@pytest.mark.parametrize(
    "token_delay",
    [
        pytest.param(0.01, id="split-across-deltas"),
        pytest.param(0.0, id="few-large-deltas"),
    ],
)
def test_xss_01_02_04_07_14_payloads_in_a_streamed_reply_are_inert(
    page: Any,
    login: Any,
    user: Any,
    simulator: Any,
    screenshot: Any,
    browser_events: Any,
    token_delay: float,
) -> None:
    enable("simulator/xss")
    simulator.token_delay = token_delay
    login(page, user)
    send(page, "Show me the payloads")
    reply = wait_finished(page)
    screenshot(page, "reply")
    assert_inert(page, browser_events)
    body = reply.locator(".sc-body").inner_text()
    assert "Payloads follow; none of them may run." in body
    assert "Plain text after the payloads stays visible." in body
    # Raw HTML is shown as the text it is (markdown-it's html: false), not dropped silently.
    assert "<script>window.__pwned = 1</script>" in body
    assert "hover me" in body
    # The image from another origin is named, not loaded (XSS-14; the CSP says img-src 'self').
    assert "from evil.example not loaded" in body
    stored = Message.objects.get(role="assistant")
    assert stored.content == XSS_REPLY
    # The same text, rendered again from the database on a reload, is just as inert.
    page.reload()
    wait_finished(page)
    assert_inert(page, browser_events)


def test_xss_payloads_as_user_message_and_conversation_title_are_inert(
    page: Any, login: Any, user: Any, simulator: Any, screenshot: Any, browser_events: Any
) -> None:
    enable("simulator/echo")
    login(page, user)
    message = TITLE_PAYLOAD + "\n" + XSS_REPLY
    send(page, message)
    reply = wait_finished(page)
    conversation = Conversation.objects.get()
    assert any(marker in conversation.title for marker in PAYLOAD_MARKERS), conversation.title
    page.locator("#sc-conversations li a").first.wait_for()
    screenshot(page, "user-message-and-title")
    assert page.locator(".sc-msg--user .sc-body").inner_text() == message
    assert page.locator("#sc-title").inner_text() == conversation.title
    assert page.locator("#sc-conversations li a").first.inner_text().strip() == conversation.title
    assert "Plain text after the payloads stays visible." in reply.locator(".sc-body").inner_text()
    assert_inert(page, browser_events)

    # Renamed to a payload through the page; reloaded so every place renders it from the server.
    rename = (
        "<svg onload=\"window.__pwned='rename'\"></svg><iframe src=javascript:window.__pwned=1>"
    )
    page.locator("#sc-conversations li button[data-action=rename]").first.click()
    page.fill("#sc-conversations li input", rename)
    page.press("#sc-conversations li input", "Enter")
    page.locator("#sc-conversations li a", has_text="<svg onload").wait_for()
    assert page.locator("#sc-title").inner_text() == rename
    page.reload()
    wait_finished(page)
    assert page.locator("#sc-title").inner_text() == rename
    assert page.title() == "Chat"
    page.locator("#sc-conversations li button[data-action=delete]").first.click()
    assert page.locator("#sc-delete-name").inner_text() == rename
    page.click("#sc-delete-dialog button[value=cancel]")
    assert_inert(page, browser_events)


def test_xss_payload_as_a_model_name_is_inert(
    page: Any, login: Any, user: Any, simulator: Any, browser_events: Any
) -> None:
    name = "<img src=x onerror=\"window.__pwned='model'\"><script>window.__pwned=2</script>"
    enable("openai/gpt-4o-mini", name=name)
    login(page, user)
    assert page.locator("#sc-model option").first.inner_text() == name
    send(page, "Hello")
    wait_finished(page)
    assert_inert(page, browser_events)
