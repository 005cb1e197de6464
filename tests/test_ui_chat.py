"""The chat page in headless Chromium against Daphne and the simulator: send, stream, stop,
regenerate, edit, reload mid-reply (ST-02), reconnect, switch, rename, search, delete, and errors
shown in place.

Screenshots of the main states go to test-artifacts/.
"""

from __future__ import annotations

from typing import Any

import pytest

from streamchat.models import ChatModel, Conversation, Message, RateLimit
from streamchat.simulator.replies import DEFAULT_REPLY, long_reply

pytestmark = [pytest.mark.browser, pytest.mark.once, pytest.mark.django_db(transaction=True)]

REPLY = ".sc-msg--assistant"
LAST_REPLY = f"{REPLY} >> nth=-1"

# Records, on every animation frame, the length of the text of a reply that is still streaming:
# how many different states a user saw before the reply finished.
PAINT_PROBE = """
window.__paints = [];
(function probe() {
  var el = document.querySelector('.sc-msg--assistant[data-status="streaming"] .sc-body');
  if (el) {
    var n = el.textContent.length;
    if (window.__paints[window.__paints.length - 1] !== n) window.__paints.push(n);
  }
  requestAnimationFrame(probe);
})();
"""

# Keeps a handle on the page's websockets so a test can cut one.
SOCKET_PROBE = """
(function () {
  var Native = window.WebSocket;
  window.__sockets = [];
  window.WebSocket = function (url, protocols) {
    var ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
    window.__sockets.push(ws);
    return ws;
  };
  window.WebSocket.prototype = Native.prototype;
  window.WebSocket.OPEN = Native.OPEN;
})();
"""


def enable(model_id: str, *, default: bool = True, name: str = "") -> ChatModel:
    return ChatModel.objects.create(
        model_id=model_id, display_name=name, enabled=True, is_default=default
    )


def send(page: Any, text: str) -> None:
    page.fill("#sc-input", text)
    page.press("#sc-input", "Enter")


def wait_for_reply_text(page: Any, chars: int) -> None:
    """Until the last reply shows more than ``chars`` characters (a function, not a string
    expression: the page's CSP forbids eval, which string predicates need)."""
    page.wait_for_function(
        "n => { var all = document.querySelectorAll('.sc-msg--assistant .sc-body');"
        " return all.length > 0 && all[all.length - 1].textContent.length > n; }",
        arg=chars,
    )


def wait_finished(
    page: Any, status: str = "complete", index: int = -1, timeout: float = 15_000
) -> Any:
    reply = page.locator(REPLY).nth(index)
    reply.and_(page.locator(f'[data-status="{status}"]')).wait_for(timeout=timeout)
    return reply


def reply_row(**filters: Any) -> Message:
    return Message.objects.filter(role="assistant", **filters).latest("created", "id")


def assert_clean(events: Any) -> None:
    assert events.page_errors == [], events.page_errors
    assert events.console_errors == [], events.console_errors
    assert events.dialogs == [] and events.foreign_requests == []


def test_send_streams_with_several_paints_and_renders_markdown(
    page: Any, login: Any, user: Any, simulator: Any, screenshot: Any, browser_events: Any
) -> None:
    simulator.token_delay = 0.015
    page.add_init_script(PAINT_PROBE)
    login(page, user)
    screenshot(page, "empty")
    page.fill("#sc-input", "First line")
    page.press("#sc-input", "Shift+Enter")  # a new line, not a send
    page.type("#sc-input", "second line")
    assert page.locator(".sc-msg").count() == 0
    page.press("#sc-input", "Enter")

    page.locator(f'{REPLY}[data-status="streaming"][aria-busy="true"]').wait_for()
    assert page.get_attribute("#sc-messages", "role") == "log"  # a live region for the reply
    assert page.input_value("#sc-input") == ""
    page.locator("#sc-stop").wait_for()  # Stop replaces Send while the reply streams
    screenshot(page, "streaming")
    reply = wait_finished(page)
    screenshot(page, "complete")

    paints = page.evaluate("window.__paints")
    assert len(paints) >= 3, f"the reply should appear in several paints, saw {paints}"
    assert paints == sorted(paints)
    # Markdown: the list, bold text, a fenced code block with its copy button.
    assert reply.locator(".sc-body ol > li").count() == 3
    assert reply.locator(".sc-body strong").inner_text() == "OpenRouter simulator"
    assert "def greet(name: str)" in reply.locator(".sc-code pre code").inner_text()
    assert reply.locator(".sc-code .sc-code-copy").count() == 1
    # Model, tokens and cost of the reply.
    meta = reply.locator(".sc-meta").inner_text()
    row = reply_row()
    usage = row.usage.get()
    assert row.model in meta
    assert f"{usage.prompt_tokens + usage.completion_tokens} tokens" in meta
    assert "$" in meta
    assert row.content == DEFAULT_REPLY
    assert row.parent.content == "First line\nsecond line"
    assert page.locator(".sc-msg--user .sc-body").inner_text() == "First line\nsecond line"
    # The new conversation has its own URL and shows up in the sidebar, titled.
    conversation = Conversation.objects.get()
    assert page.url.endswith(f"/chat/c/{conversation.pk}/")
    page.locator(
        f'#sc-conversations li[data-id="{conversation.pk}"] a[aria-current="page"]'
    ).wait_for()
    assert page.locator("#sc-send").is_visible() and not page.locator("#sc-stop").is_visible()
    assert reply.get_attribute("aria-busy") is None
    # Copy puts the reply's Markdown source on the clipboard.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    reply.locator("button[data-action=copy]").click()
    reply.locator("button[data-action=copy]", has_text="Copied").wait_for()
    assert page.evaluate("() => navigator.clipboard.readText()") == DEFAULT_REPLY
    assert_clean(browser_events)


def test_stop_keeps_the_partial_text(
    page: Any, login: Any, user: Any, simulator: Any, screenshot: Any, browser_events: Any
) -> None:
    simulator.token_delay = 0.08
    login(page, user)
    send(page, "Tell me something long")
    body = page.locator(f"{REPLY} .sc-body")
    wait_for_reply_text(page, 20)
    page.click("#sc-stop")
    reply = wait_finished(page, "stopped")
    screenshot(page, "stopped")
    assert reply.locator(".sc-msg-note").inner_text() == "Stopped"
    row = reply_row()
    assert row.status == "stopped"
    assert 0 < len(row.content) < len(DEFAULT_REPLY)
    assert DEFAULT_REPLY.startswith(row.content)
    # What the page shows is what was kept (allowing for Markdown rendering of a prefix).
    shown = body.inner_text().strip()
    assert shown and shown.split()[0] in row.content
    assert page.locator("#sc-send").is_visible()
    assert_clean(browser_events)


def test_regenerate_and_edit_keep_the_earlier_branches(
    page: Any, login: Any, user: Any, simulator: Any, screenshot: Any, browser_events: Any
) -> None:
    simulator.next_replies(["First answer.", "Second answer.", "Answer to the edited question."])
    login(page, user)
    send(page, "The question")
    wait_finished(page)
    assert page.locator(f"{REPLY} .sc-body").inner_text() == "First answer."

    page.click(f"{REPLY} button[data-action=regenerate]")
    page.locator(f"{REPLY} .sc-body", has_text="Second answer.").wait_for()
    wait_finished(page)
    siblings = page.locator(f"{REPLY} .sc-sibling-count")
    assert siblings.inner_text() == "2 / 2"
    page.click(f"{REPLY} button[data-action=prev]")
    assert page.locator(f"{REPLY} .sc-body").inner_text() == "First answer."
    assert siblings.inner_text() == "1 / 2"
    page.click(f"{REPLY} button[data-action=next]")
    assert page.locator(f"{REPLY} .sc-body").inner_text() == "Second answer."

    page.click(".sc-msg--user button[data-action=edit]")
    page.fill(".sc-edit textarea", "The edited question")
    page.click(".sc-edit button.sc-primary")
    page.locator(f"{REPLY} .sc-body", has_text="Answer to the edited question.").wait_for()
    wait_finished(page)
    user_siblings = page.locator(".sc-msg--user .sc-sibling-count")
    assert user_siblings.inner_text() == "2 / 2"
    assert page.locator(".sc-msg--user .sc-body").inner_text() == "The edited question"
    screenshot(page, "branches")
    page.click(".sc-msg--user button[data-action=prev]")
    assert page.locator(".sc-msg--user .sc-body").inner_text() == "The question"
    assert page.locator(f"{REPLY} .sc-body").inner_text() in ("First answer.", "Second answer.")

    # The tree survives a reload: the newest branch is shown, the others are one click away.
    page.reload()
    page.locator(f"{REPLY} .sc-body", has_text="Answer to the edited question.").wait_for()
    assert page.locator(".sc-msg--user .sc-sibling-count").inner_text() == "2 / 2"
    assert Message.objects.filter(role="assistant").count() == 3
    assert Message.objects.filter(role="user").count() == 2
    assert_clean(browser_events)


def test_st02_reload_mid_reply_continues_without_gap_or_duplicate(
    page: Any, login: Any, user: Any, simulator: Any, screenshot: Any, browser_events: Any
) -> None:
    tokens = 160
    enable(f"simulator/long?tokens={tokens}")
    simulator.token_delay = 0.02
    expected = long_reply(tokens)
    page.add_init_script(PAINT_PROBE)
    login(page, user)
    send(page, "A long one, please")
    wait_for_reply_text(page, 300)
    page.reload()
    # The saved text is shown at once, and the live tail keeps coming.
    page.locator(f'{REPLY}[data-status="streaming"]').wait_for()
    screenshot(page, "reloaded-streaming")
    wait_finished(page, timeout=30_000)
    assert len(page.evaluate("window.__paints")) >= 2, (
        "the reply should keep streaming after the reload"
    )
    live = page.locator(f"{REPLY} .sc-body").inner_text()

    row = reply_row()
    assert row.content == expected
    # What the reloaded page assembled equals a fresh rendering of the stored text.
    page.reload()
    wait_finished(page)
    assert page.locator(f"{REPLY} .sc-body").inner_text() == live
    assert page.locator(f"{REPLY} .sc-body li").count() == expected.count("\n")
    assert_clean(browser_events)


def test_socket_reconnects_by_itself_and_the_reply_resumes(
    page: Any, login: Any, user: Any, simulator: Any, browser_events: Any
) -> None:
    tokens = 150
    enable(f"simulator/long?tokens={tokens}")
    simulator.token_delay = 0.02
    page.add_init_script(SOCKET_PROBE)
    login(page, user)
    send(page, "Keep going")
    wait_for_reply_text(page, 200)
    page.evaluate("window.__sockets[window.__sockets.length - 1].close()")
    wait_finished(page, timeout=30_000)
    assert page.evaluate("window.__sockets.length") >= 2
    live = page.locator(f"{REPLY} .sc-body").inner_text()
    assert reply_row().content == long_reply(tokens)
    page.reload()
    wait_finished(page)
    assert page.locator(f"{REPLY} .sc-body").inner_text() == live
    assert_clean(browser_events)


def test_switch_rename_search_and_delete_conversations(
    page: Any, login: Any, user: Any, simulator: Any, screenshot: Any, browser_events: Any
) -> None:
    simulator.next_replies(["About pelicans.", "About otters."])
    login(page, user)
    send(page, "Tell me about pelicans")
    wait_finished(page)
    first = Conversation.objects.get()
    page.click("#sc-new")
    assert page.locator(".sc-msg").count() == 0
    send(page, "Tell me about otters")
    page.locator(f"{REPLY} .sc-body", has_text="About otters.").wait_for()
    wait_finished(page)
    second = Conversation.objects.exclude(pk=first.pk).get()
    items = page.locator("#sc-conversations li")
    page.wait_for_function("() => document.querySelectorAll('#sc-conversations li').length == 2")
    assert [int(i) for i in items.evaluate_all("els => els.map(e => e.dataset.id)")] == [
        second.pk,
        first.pk,
    ]

    # Switch, by the sidebar and by the browser's back button.
    page.click(f'#sc-conversations li[data-id="{first.pk}"] a')
    page.locator(f"{REPLY} .sc-body", has_text="About pelicans.").wait_for()
    assert page.url.endswith(f"/chat/c/{first.pk}/")
    assert page.locator(".sc-msg--user .sc-body").inner_text() == "Tell me about pelicans"
    page.go_back()
    page.locator(f"{REPLY} .sc-body", has_text="About otters.").wait_for()

    # Search by content.
    page.fill("#sc-search", "PELICAN")
    page.wait_for_function("() => document.querySelectorAll('#sc-conversations li').length == 1")
    assert page.locator("#sc-conversations li").get_attribute("data-id") == str(first.pk)
    page.fill("#sc-search", "")
    page.wait_for_function("() => document.querySelectorAll('#sc-conversations li').length == 2")

    # Rename inline (Enter saves).
    page.click(f'#sc-conversations li[data-id="{second.pk}"] button[data-action=rename]')
    page.fill("#sc-conversations li input", "Otter notes")
    page.press("#sc-conversations li input", "Enter")
    page.locator("#sc-conversations a", has_text="Otter notes").wait_for()
    assert page.locator("#sc-title").inner_text() == "Otter notes"
    second.refresh_from_db()
    assert second.title == "Otter notes"

    # Delete, with a confirmation that can be cancelled.
    delete = f'#sc-conversations li[data-id="{second.pk}"] button[data-action=delete]'
    page.click(delete)
    page.locator("#sc-delete-dialog[open]").wait_for()
    screenshot(page, "confirm-delete")
    page.click("#sc-delete-dialog button[value=cancel]")
    assert Conversation.objects.filter(pk=second.pk).exists()
    page.click(delete)
    page.click("#sc-delete-confirm")
    page.wait_for_function("() => document.querySelectorAll('#sc-conversations li').length == 1")
    assert not Conversation.objects.filter(pk=second.pk).exists()
    assert page.url.endswith("/chat/")  # the open conversation was deleted: a new chat
    assert page.locator(".sc-msg").count() == 0
    assert_clean(browser_events)


def test_rate_limit_error_is_shown_in_place_and_the_message_kept(
    page: Any, login: Any, user: Any, simulator: Any, screenshot: Any, browser_events: Any
) -> None:
    RateLimit.objects.create(scope=RateLimit.Scope.DEFAULT, requests_per_minute=1)
    login(page, user)
    send(page, "One")
    wait_finished(page)
    send(page, "Two, too soon")
    pending = page.locator(".sc-msg--pending")
    error = pending.locator(".sc-msg-error")
    error.wait_for()
    screenshot(page, "rate-limited")
    assert error.inner_text().startswith("Rate limited: try again in ")
    assert error.inner_text().endswith(" s")
    assert pending.locator(".sc-body").inner_text() == "Two, too soon"
    assert Message.objects.filter(role="user").count() == 1
    # The text is never lost: Edit puts it back in the message box.
    pending.locator("button[data-action=edit-pending]").click()
    assert page.input_value("#sc-input") == "Two, too soon"
    assert page.locator(".sc-msg--pending").count() == 0
    assert browser_events.page_errors == [] and browser_events.dialogs == []


def test_errors_are_plain_model_unavailable_and_failed_reply(
    page: Any, login: Any, user: Any, simulator: Any, screenshot: Any, browser_events: Any
) -> None:
    enable("openai/gpt-4o-mini", name="GPT-4o mini")
    soon_gone = enable("anthropic/claude-3.5-haiku", default=False, name="Haiku")
    enable("simulator/error-mid?after=6", default=False, name="Flaky")
    login(page, user)
    # A model disabled after the page was loaded.
    ChatModel.objects.filter(pk=soon_gone.pk).update(enabled=False)
    page.select_option("#sc-model", "anthropic/claude-3.5-haiku")
    send(page, "Hello?")
    error = page.locator(".sc-msg--pending .sc-msg-error")
    error.wait_for()
    assert error.inner_text() == "This model is not available"
    # Retry with another model: the same text goes out, the error goes away.
    page.select_option("#sc-model", "simulator/error-mid?after=6")
    page.click(".sc-msg--pending button[data-action=retry]")
    reply = wait_finished(page, "error")
    screenshot(page, "reply-failed")
    row = reply_row()
    assert row.parent.content == "Hello?"
    assert reply.locator(".sc-msg-error").is_visible()
    assert reply.locator(".sc-msg-error").inner_text()
    assert reply.locator(".sc-body").inner_text().strip() != ""  # the partial text is kept
    assert row.content and DEFAULT_REPLY.startswith(row.content)
    assert browser_events.page_errors == [] and browser_events.dialogs == []


def test_phone_sized_screen_keeps_the_chat_usable(
    page: Any, login: Any, user: Any, simulator: Any, screenshot: Any, browser_events: Any
) -> None:
    page.set_viewport_size({"width": 390, "height": 800})
    login(page, user)
    assert not page.locator("#sc-sidebar").is_visible()
    send(page, "Hi from a phone")
    wait_finished(page)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways ({width}px)"
    screenshot(page, "phone")
    page.click("#sc-open-sidebar")
    page.locator("#sc-sidebar").wait_for(state="visible")
    assert page.get_attribute("#sc-open-sidebar", "aria-expanded") == "true"
    screenshot(page, "phone-sidebar")
    page.keyboard.press("Escape")
    page.locator("#sc-sidebar").wait_for(state="hidden")
    assert_clean(browser_events)


def test_ended_session_says_log_in_again_and_keeps_the_message(
    page: Any, login: Any, user: Any, simulator: Any, screenshot: Any, browser_events: Any
) -> None:
    from django.contrib.sessions.models import Session

    login(page, user)
    page.locator("#sc-input").wait_for()
    Session.objects.all().delete()  # logged out elsewhere, or expired
    send(page, "Are you still there?")
    banner = page.locator("#sc-connection")
    banner.get_by_role("link", name="Log in again").wait_for()
    screenshot(page, "logged-out")
    assert page.locator(".sc-msg--pending .sc-body").inner_text() == "Are you still there?"
    assert Message.objects.count() == 0
    # The unsent text survives a trip through the login page.
    page.reload()
    assert "/login/" in page.url
    login(page, user)
    assert page.input_value("#sc-input") == "Are you still there?"
    assert browser_events.page_errors == [] and browser_events.dialogs == []
