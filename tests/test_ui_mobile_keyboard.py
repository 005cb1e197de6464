"""The chat page on a phone and from the keyboard, in Chromium at 1280×800 and 390×844 (a touch
context): the model picker is never cut; the drawer takes the focus itself (no keyboard pops up)
and a tap beside it closes it; every tap target is at least 44×44 CSS px; focus lands on the
composer; a skip link; the conversation list is one Tab stop; disabled buttons look disabled;
shortcuts and their help dialog; a refused message stays in the thread; reconnecting at once when
the network returns, or on "Retry now".

Screenshots go to test-artifacts/.
"""

from __future__ import annotations

from typing import Any

import pytest

from streamchat.models import ChatModel, Conversation, Message, RateLimit
from tests.ui_contexts import DRAWER_STILL, open_page

pytestmark = [pytest.mark.browser, pytest.mark.once, pytest.mark.django_db(transaction=True)]

SIZES = ["desktop", "mobile"]
REPLY = ".sc-msg--assistant"

# Every element a finger or a pointer can activate.
TARGETS = "a[href], button, input, select, textarea, summary, [tabindex]:not([tabindex='-1'])"

# For each visible, enabled target: its box and what it is. A link inside a reply's running text
# is exempt (WCAG 2.5.5/2.5.8: a target in a sentence is sized by the sentence), as is the skip
# link, which is off screen until it has the focus.
MEASURE = """(selector) => Array.from(document.querySelectorAll(selector)).filter(el => {
    if (el.disabled || el.closest("[hidden], dialog:not([open])")) return false;
    if (el.classList.contains("sc-skip-link")) return false;
    if (el.matches(".sc-body a") && getComputedStyle(el).display === "inline") return false;
    if (el.matches(".sc-messages")) return false;  // the scrolling log itself, not a button
    const style = getComputedStyle(el);
    if (style.visibility === "hidden" || style.display === "none") return false;
    const box = el.getBoundingClientRect();
    return box.width > 0 && box.height > 0 && box.bottom > 0 && box.top < innerHeight
        && box.right > 0 && box.left < innerWidth;
}).map(el => {
    const box = el.getBoundingClientRect();
    return { what: el.outerHTML.slice(0, 90), width: box.width, height: box.height };
})"""


@pytest.fixture
def models(db: None) -> list[ChatModel]:
    return [
        ChatModel.objects.create(
            model_id="openai/gpt-4o-mini",
            display_name="GPT-4o mini",
            enabled=True,
            is_default=True,
        ),
        ChatModel.objects.create(
            model_id="anthropic/claude-3.5-sonnet",
            display_name="Anthropic: Claude 3.5 Sonnet",
            enabled=True,
        ),
    ]


@pytest.fixture
def open_at(browser: Any, live_daphne: Any, browser_events: Any) -> Any:
    """``open_at("mobile")``: a fresh page at that size (a touch context for "mobile")."""
    return lambda size, **options: open_page(
        browser, live_daphne.url, browser_events, size=size, **options
    )


def drawer_open(page: Any) -> None:
    page.locator("#sc-sidebar").wait_for(state="visible")
    page.wait_for_function(DRAWER_STILL)


def conversations(user: Any, count: int) -> list[Conversation]:
    made = []
    for n in range(count):
        conversation = Conversation.objects.create(owner=user, title=f"Topic {n + 1}")
        question = Message.objects.create(
            conversation=conversation, role="user", content=f"Question {n + 1}"
        )
        Message.objects.create(
            conversation=conversation,
            parent=question,
            role="assistant",
            content="An answer with `code` and\n\n```python\nprint('hi')\n```\n",
            status="complete",
        )
        made.append(conversation)
    return made


def send(page: Any, text: str) -> None:
    page.fill("#sc-input", text)
    page.press("#sc-input", "Enter")


def finished(page: Any, index: int = -1, timeout: float = 15_000) -> Any:
    reply = page.locator(REPLY).nth(index)
    reply.and_(page.locator('[data-status="complete"]')).wait_for(timeout=timeout)
    return reply


def focused(page: Any) -> str:
    """The focused element as ``tag#id.class`` (what an assertion message can show)."""
    return page.evaluate(
        "() => { const e = document.activeElement; return e ? e.tagName.toLowerCase()"
        " + (e.id ? '#' + e.id : '') + (e.className ? '.' + String(e.className).split(' ')"
        ".join('.') : '') : ''; }"
    )


def assert_clean(events: Any) -> None:
    assert events.page_errors == [], events.page_errors
    assert events.console_errors == [], events.console_errors
    assert events.dialogs == [] and events.foreign_requests == []


# --- mobile -------------------------------------------------------------------------------------


def test_phone_model_picker_is_whole_and_on_screen(
    open_at: Any, login: Any, user: Any, models: Any, screenshot: Any, browser_events: Any
) -> None:
    page = open_at("mobile")
    login(page, user)
    page.select_option("#sc-model", "anthropic/claude-3.5-sonnet")
    screenshot(page, "picker")
    picker = page.locator("#sc-model").bounding_box()
    assert picker["x"] >= 0 and picker["x"] + picker["width"] <= 390, picker
    # The chosen name fits in the box: its text width, in the select's font, plus padding and
    # the arrow, is no wider than the select.
    fits = page.evaluate(
        """() => {
            const select = document.getElementById("sc-model");
            const style = getComputedStyle(select);
            const context = document.createElement("canvas").getContext("2d");
            context.font = style.font;
            const text = select.options[select.selectedIndex].text;
            const needed = context.measureText(text).width + parseFloat(style.paddingLeft)
                + parseFloat(style.paddingRight) + 20;
            return [needed, select.clientWidth];
        }"""
    )
    assert fits[0] <= fits[1], f"the model's name is cut: needs {fits[0]} px, has {fits[1]}"
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert_clean(browser_events)


def test_phone_drawer_takes_the_focus_and_a_tap_beside_it_closes_it(
    open_at: Any, login: Any, user: Any, models: Any, screenshot: Any, browser_events: Any
) -> None:
    conversations(user, 3)
    page = open_at("mobile")
    login(page, user)
    assert not page.locator("#sc-sidebar").is_visible()
    page.tap("#sc-open-sidebar")
    drawer_open(page)
    # The drawer itself has the focus: not the search box, which would pop the keyboard up.
    assert focused(page).startswith("aside#sc-sidebar"), focused(page)
    assert page.get_attribute("#sc-open-sidebar", "aria-expanded") == "true"
    screenshot(page, "drawer-open")
    # A tap on the dimmed page beside the drawer closes it; the focus goes back to its button.
    drawer = page.locator("#sc-sidebar").bounding_box()
    page.touchscreen.tap(drawer["width"] + (390 - drawer["width"]) / 2, 600)
    page.locator("#sc-sidebar").wait_for(state="hidden")
    assert page.get_attribute("#sc-open-sidebar", "aria-expanded") == "false"
    assert focused(page) == "button#sc-open-sidebar.sc-icon-button.sc-only-narrow"
    screenshot(page, "drawer-closed")
    # Choosing a conversation closes the drawer too, and opens it without a keyboard popping up.
    page.tap("#sc-open-sidebar")
    page.locator("#sc-conversations a >> nth=1").tap()
    page.locator("#sc-sidebar").wait_for(state="hidden")
    finished(page)
    page.locator("#sc-title:focus").wait_for()
    assert_clean(browser_events)


def test_phone_tap_targets_are_at_least_44_px(
    open_at: Any, login: Any, user: Any, models: Any, screenshot: Any, browser_events: Any
) -> None:
    [conversation] = conversations(user, 1)
    page = open_at("mobile")
    login(page, user, next=f"/chat/c/{conversation.pk}/")
    finished(page)
    small = page.evaluate(MEASURE, TARGETS)
    page.tap("#sc-open-sidebar")
    drawer_open(page)
    small += page.evaluate(MEASURE, TARGETS)
    screenshot(page, "drawer")
    page.click("#sc-help-open")  # at the foot of the drawer
    page.locator("#sc-help-dialog[open]").wait_for()
    small += page.evaluate(MEASURE, TARGETS)
    measured = len(small)
    small = [t for t in small if t["width"] < 44 or t["height"] < 44]
    assert measured > 15, f"only {measured} targets measured"
    assert small == [], "targets smaller than 44×44 px:\n" + "\n".join(
        f"{t['width']:.0f}×{t['height']:.0f} {t['what']}" for t in small
    )
    assert_clean(browser_events)


# --- keyboard -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_focus_lands_on_the_composer(
    open_at: Any,
    login: Any,
    user: Any,
    models: Any,
    screenshot: Any,
    browser_events: Any,
    size: str,
) -> None:
    first, second = conversations(user, 2)
    page = open_at(size)
    login(page, user)
    # A conversation opens: the composer has the focus. On a touch screen the title has it
    # instead: a focused text box would pop the keyboard up over the conversation.
    opened = "#sc-input:focus" if size == "desktop" else "#sc-title:focus"
    page.locator(opened).wait_for()
    page.goto(f"/chat/c/{first.pk}/")
    finished(page)
    page.locator(opened).wait_for()
    if size == "desktop":
        page.click(f"#sc-conversations li[data-id='{second.pk}'] a")
        page.locator("#sc-title", has_text="Topic 2").wait_for()
        page.locator("#sc-input:focus").wait_for()
        page.click("#sc-new")
    else:
        page.tap("#sc-open-sidebar")
        page.locator("#sc-new").tap()
        page.locator("#sc-sidebar").wait_for(state="hidden")
    page.locator("#sc-title", has_text="New chat").wait_for()
    page.locator("#sc-input:focus").wait_for()
    screenshot(page, "new-chat-focused")
    assert_clean(browser_events)


def to_top(page: Any) -> None:
    """Where Tab starts on a page just opened: before its first element. (Blurring is not enough:
    Chromium starts the next Tab from the element that lost the focus.) A sentinel that is not a
    Tab stop itself is put first in <body> and focused."""
    page.evaluate(
        """() => {
            let top = document.getElementById("test-top");
            if (!top) {
                top = document.createElement("span");
                top.id = "test-top";
                top.tabIndex = -1;
                document.body.prepend(top);
            }
            top.focus();
        }"""
    )


@pytest.mark.parametrize("size", SIZES)
def test_skip_link_first_and_the_composer_a_few_tabs_away_with_20_conversations(
    open_at: Any,
    login: Any,
    user: Any,
    models: Any,
    screenshot: Any,
    browser_events: Any,
    size: str,
) -> None:
    conversations(user, 20)
    page = open_at(size)
    login(page, user)
    page.locator("#sc-conversations li").nth(19).wait_for(state="attached")
    # From the top of the page, Tab after Tab, without following the skip link.
    to_top(page)
    page.keyboard.press("Tab")
    skip = page.locator(".sc-skip-link")
    assert page.evaluate("document.activeElement.classList.contains('sc-skip-link')"), focused(page)
    assert skip.inner_text() == "Skip to composer" and skip.is_visible()
    screenshot(page, "skip-link")
    presses = 1
    while not page.evaluate("document.activeElement.id === 'sc-input'"):
        page.keyboard.press("Tab")
        presses += 1
        assert presses <= 5, f"the composer is not reached in 5 Tab presses (at {focused(page)})"
    # The skip link itself: Enter goes straight to the composer, and the address stays as it was.
    to_top(page)
    url = page.url
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.locator("#sc-input:focus").wait_for()
    assert page.url == url
    assert_clean(browser_events)


def test_conversation_list_is_one_tab_stop_with_arrow_keys(
    open_at: Any, login: Any, user: Any, models: Any, screenshot: Any, browser_events: Any
) -> None:
    made = conversations(user, 20)  # the newest is listed first
    page = open_at("desktop")
    login(page, user, next=f"/chat/c/{made[5].pk}/")
    finished(page)
    rows = page.locator("#sc-conversations li")
    rows.nth(19).wait_for()
    assert page.locator("#sc-conversations [tabindex='0']").count() == 1
    page.focus("#sc-search")
    page.keyboard.press("Tab")
    # Into the list: on the open conversation.
    assert page.evaluate("document.activeElement.getAttribute('aria-current')") == "page"
    assert page.evaluate("document.activeElement.textContent") == "Topic 6"
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.textContent") == "Topic 5"
    page.keyboard.press("End")
    assert page.evaluate("document.activeElement.textContent") == "Topic 1"
    page.keyboard.press("Home")
    assert page.evaluate("document.activeElement.textContent") == "Topic 20"
    page.keyboard.press("ArrowUp")  # stays on the first
    assert page.evaluate("document.activeElement.textContent") == "Topic 20"
    # Right: the row's Rename and Delete buttons; Left back to its title.
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.dataset.action") == "rename"
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.dataset.action") == "delete"
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert page.evaluate("document.activeElement.textContent") == "Topic 20"
    screenshot(page, "list-focus")
    # One Tab leaves the list, whichever row has the focus; Shift+Tab comes back to that row.
    page.keyboard.press("Tab")
    assert page.evaluate("!document.activeElement.closest('#sc-conversations')"), focused(page)
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.textContent") == "Topic 20"
    # Enter opens it (and the composer takes the focus).
    page.keyboard.press("Enter")
    page.locator("#sc-title", has_text="Topic 20").wait_for()
    page.locator("#sc-input:focus").wait_for()
    assert_clean(browser_events)


@pytest.mark.parametrize("size", SIZES)
def test_disabled_edit_copy_regenerate_look_disabled(
    open_at: Any,
    login: Any,
    user: Any,
    models: Any,
    simulator: Any,
    screenshot: Any,
    browser_events: Any,
    size: str,
) -> None:
    [conversation] = conversations(user, 1)
    simulator.token_delay = 0.05
    page = open_at(size)
    login(page, user, next=f"/chat/c/{conversation.pk}/")
    finished(page)
    enabled = page.locator(f"{REPLY} >> nth=0").locator("[data-action=regenerate]")
    normal = enabled.evaluate("b => [getComputedStyle(b).opacity, getComputedStyle(b).cursor]")
    send(page, "Stream slowly please")
    page.locator(f'{REPLY}[data-status="streaming"]').wait_for()
    # While a reply streams, Edit and Regenerate are disabled, and look it.
    for action in ("edit", "regenerate"):
        button = page.locator(f"button[data-action={action}] >> nth=0")
        assert button.is_disabled()
        look = button.evaluate("b => [getComputedStyle(b).opacity, getComputedStyle(b).cursor]")
        assert float(look[0]) <= 0.5 < float(normal[0]), (action, look, normal)
        assert look[1] == "not-allowed" and normal[1] == "pointer"
    screenshot(page, "disabled-while-streaming")
    page.keyboard.press("Escape")  # stop
    page.locator(f'{REPLY}[data-status="stopped"]').wait_for()
    assert_clean(browser_events)


# --- shortcuts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_shortcuts_and_their_help_dialog(
    open_at: Any,
    login: Any,
    user: Any,
    models: Any,
    simulator: Any,
    screenshot: Any,
    browser_events: Any,
    size: str,
) -> None:
    [conversation] = conversations(user, 1)
    page = open_at(size)
    login(page, user, next=f"/chat/c/{conversation.pk}/")
    finished(page)
    # "?" outside a text field opens the help dialog, which lists the shortcuts.
    page.locator(f"{REPLY} .sc-body").click()
    page.keyboard.press("?")
    dialog = page.locator("#sc-help-dialog")
    dialog.and_(page.locator("[open]")).wait_for()
    text = dialog.inner_text()
    for keys in ("Shift+O", "Shift+Esc", "Esc", "?"):
        assert keys in text, (keys, text)
    screenshot(page, "help")
    page.keyboard.press("Escape")
    assert not dialog.is_visible()
    # In the composer "?" is text.
    page.focus("#sc-input")
    page.keyboard.press("?")
    assert page.input_value("#sc-input") == "?" and not dialog.is_visible()
    page.fill("#sc-input", "")
    # The button at the foot of the sidebar (the drawer, on a phone) opens it too.
    if size == "mobile":
        page.tap("#sc-open-sidebar")
    page.click("#sc-help-open")
    dialog.and_(page.locator("[open]")).wait_for()
    page.click("#sc-help-dialog button[value=close]")
    if size == "mobile":
        page.keyboard.press("Escape")  # the drawer
        page.locator("#sc-sidebar").wait_for(state="hidden")
    # Shift+Esc: to the composer from anywhere.
    page.locator(f"{REPLY} .sc-body").click()
    page.keyboard.press("Shift+Escape")
    page.locator("#sc-input:focus").wait_for()
    # Esc while a reply streams: stop, wherever the focus is.
    simulator.token_delay = 0.05
    send(page, "A long one")
    page.locator(f'{REPLY}[data-status="streaming"]').wait_for()
    page.locator(f"{REPLY} >> nth=0").locator(".sc-body").click()
    page.keyboard.press("Escape")
    page.locator(f'{REPLY}[data-status="stopped"]').wait_for()
    # Ctrl+Shift+O (Cmd on a Mac): a new chat.
    page.keyboard.press("ControlOrMeta+Shift+O")
    page.locator("#sc-title", has_text="New chat").wait_for()
    page.locator("#sc-input:focus").wait_for()
    assert page.locator(".sc-msg").count() == 0
    assert_clean(browser_events)


# --- gone or missing ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_rate_limited_message_stays_when_another_is_sent(
    open_at: Any,
    login: Any,
    user: Any,
    models: Any,
    screenshot: Any,
    browser_events: Any,
    size: str,
) -> None:
    limit = RateLimit.objects.create(scope=RateLimit.Scope.DEFAULT, requests_per_minute=1)
    page = open_at(size)
    login(page, user)
    send(page, "One")
    finished(page)
    send(page, "Two, too soon")
    refused = page.locator(".sc-msg--failed")
    refused.locator(".sc-msg-error").wait_for()
    assert "Not sent" in refused.locator(".sc-msg-note").inner_text()
    assert refused.locator(".sc-msg-error").inner_text().startswith("Rate limited: try again in ")
    # The limit is lifted; the next message is sent and answered: the refused one stays, in
    # place, with its Retry.
    limit.delete()
    send(page, "Three")
    finished(page, index=1)
    bodies = page.locator(".sc-msg .sc-body").all_inner_texts()
    assert bodies[0] == "One" and "Two, too soon" in bodies and bodies[-2] == "Three", bodies
    assert bodies.index("Two, too soon") < bodies.index("Three")
    assert refused.count() == 1 and refused.locator("[data-action=retry]").is_visible()
    screenshot(page, "refused-kept")
    # Retry sends it (a branch beside "Three", as an edit would) and it is no longer marked.
    settled(page)
    refused.locator("[data-action=retry]").click()
    page.locator(".sc-msg--failed").wait_for(state="detached")
    page.locator(".sc-msg--user:not(.sc-msg--pending)", has_text="Two, too soon").wait_for()
    finished(page)
    assert Message.objects.filter(role="user", content="Two, too soon").count() == 1
    assert_clean(browser_events)


def settled(page: Any) -> None:
    """Until no reply is streaming in the database: the page hears "finished" just before the
    server has written the end of the reply, and a message sent in between is refused as busy."""
    while Message.objects.filter(status=Message.Status.STREAMING).exists():
        page.wait_for_timeout(50)


# Records, in order: every websocket the page opens, and the start and end of "online" events
# and clicks (the end is a task queued by a listener that runs first, so it runs after all of
# the page's own listeners). A socket between the two was opened by the page's handler itself,
# not by a timer that happened to fire later.
RECONNECT_PROBE = """
(function () {
  var Native = window.WebSocket;
  window.__log = [];
  window.__sockets = [];
  window.WebSocket = function (url, protocols) {
    var ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
    window.__sockets.push(ws);
    window.__log.push("socket");
    return ws;
  };
  window.WebSocket.prototype = Native.prototype;
  ["CONNECTING", "OPEN", "CLOSING", "CLOSED"].forEach(function (k) {
    window.WebSocket[k] = Native[k];
  });
  ["online", "click"].forEach(function (type) {
    window.addEventListener(type, function () {
      window.__log.push(type);
      setTimeout(function () { window.__log.push(type + " handled"); }, 0);
    }, true);
  });
})();
"""


def handled_at_once(page: Any, event: str) -> bool:
    """Whether the page opened a socket while handling the last ``event``."""
    log = page.evaluate("window.__log")
    start = len(log) - 1 - log[::-1].index(event)
    end = log.index(f"{event} handled", start)
    return "socket" in log[start:end]


@pytest.mark.parametrize("size", SIZES)
def test_reconnects_when_the_network_returns_and_on_retry_now(
    open_at: Any,
    login: Any,
    user: Any,
    models: Any,
    screenshot: Any,
    browser_events: Any,
    size: str,
) -> None:
    page = open_at(size)
    page.add_init_script(RECONNECT_PROBE)
    login(page, user)
    page.wait_for_function("() => window.__sockets.length === 1")
    # The network goes: the socket is closed, and the page tries again later.
    page.context.set_offline(True)
    page.evaluate("window.__sockets[0].close()")
    notice = page.locator("#sc-connection")
    retry = page.locator("#sc-retry-now")
    retry.wait_for()
    assert notice.is_visible() and "Reconnecting" in notice.inner_text()
    screenshot(page, "offline")
    # "Retry now" tries at once (and fails: still offline; the button stays).
    retry.click()
    assert handled_at_once(page, "click")
    # The network returns: the page reconnects at once, without waiting for its next attempt.
    page.context.set_offline(False)
    page.wait_for_function("() => window.__log.includes('online handled')")
    assert handled_at_once(page, "online")
    notice.wait_for(state="hidden")
    send(page, "Back online")
    finished(page)
    assert_clean_but_offline(browser_events)


def assert_clean_but_offline(events: Any) -> None:
    """No script error; the console may only report the failed connections while offline."""
    assert events.page_errors == [], events.page_errors
    unexpected = [e for e in events.console_errors if "WebSocket" not in e]
    assert unexpected == [], unexpected
    assert events.dialogs == [] and events.foreign_requests == []
