"""The chat page's rendering and look in headless Chromium, against Daphne and the simulator:
highlighted code, math, task lists, footnotes, aligned tables without CSP violations, streaming
that never shows half a Markdown construct raw, dark mode, timestamps, jump-to-latest and titles
as plain text.

Screenshots at 1280×800 and 390×844 go to test-artifacts/.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from streamchat.models import ChatModel, Conversation, Message

pytestmark = [pytest.mark.browser, pytest.mark.once, pytest.mark.django_db(transaction=True)]

REPLY = ".sc-msg--assistant"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

# Counts Content-Security-Policy violations (each would also be a console error).
CSP_PROBE = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " " + (e.sample || ""));
});
"""

RICH_REPLY = """Python:

```python
def area(r: float) -> float:
    return 3.14159 * r ** 2
```

Inline math $e^{i\\pi} + 1 = 0$ and \\(a^2 + b^2 = c^2\\), display math:

$$
\\int_0^1 x^2\\,dx = \\frac{1}{3}
$$

\\[
\\sqrt{2} \\approx 1.414
\\]

- [x] write the parser
- [ ] ship it

| left | centre | right |
|:-----|:------:|------:|
| a | b | c |
| 1 | 2 | 3 |
| x | y | z |

A claim with a source[^1].

[^1]: The source, {n}.
"""


def enable(model_id: str = "openai/gpt-4o-mini") -> ChatModel:
    return ChatModel.objects.create(model_id=model_id, enabled=True, is_default=True)


def send(page: Any, text: str) -> None:
    page.fill("#sc-input", text)
    page.press("#sc-input", "Enter")


def wait_finished(page: Any, count: int = 1) -> Any:
    """Until ``count`` replies are complete; the last one."""
    page.locator(f'{REPLY}[data-status="complete"] >> nth={count - 1}').wait_for(timeout=20_000)
    return page.locator(REPLY).nth(count - 1)


def assert_clean(page: Any, events: Any) -> None:
    assert page.evaluate("window.__csp") == []
    assert events.page_errors == [], events.page_errors
    assert events.console_errors == [], events.console_errors
    assert events.dialogs == [] and events.foreign_requests == []


def test_code_math_task_lists_footnotes_and_aligned_tables_render(
    page: Any, login: Any, user: Any, simulator: Any, screenshot: Any, browser_events: Any
) -> None:
    enable()
    simulator.next_reply(RICH_REPLY.replace("{n}", "first"))
    simulator.next_reply(RICH_REPLY.replace("{n}", "second"))
    page.add_init_script(CSP_PROBE)
    page.set_viewport_size(DESKTOP)
    login(page, user)
    send(page, "Show me everything")
    first = wait_finished(page)
    send(page, "Again")
    second = wait_finished(page, 2)

    # highlight.js: the fenced block's tokens are classed spans.
    code = first.locator(".sc-code pre code.hljs.language-python")
    assert code.locator("span.hljs-keyword").first.inner_text() == "def"
    assert code.locator("span.hljs-title.function_").first.inner_text() == "area"
    assert first.locator(".sc-code-bar span").first.inner_text() == "python"

    # KaTeX, every delimiter: $…$, \(…\), $$…$$, \[…\]; laid out (its HTML) and readable (MathML).
    assert first.locator(".katex").count() == 4
    assert first.locator(".sc-math-display .katex-display").count() == 2
    tex = first.locator(".katex-mathml math annotation").first.text_content()
    assert tex == "e^{i\\pi} + 1 = 0"
    assert first.locator(".katex-html .mfrac").count() == 1
    assert first.locator(".katex-html svg").count() >= 1  # the square root's sign
    # KaTeX's layout reached the elements (through the CSSOM: no style attribute was parsed).
    heights = first.locator(".katex-html .katex-strut").evaluate_all(
        "els => els.map(el => el.style.height)"
    )
    assert heights and all(h.endswith("em") for h in heights)
    assert first.locator("[data-sc-style]").count() == 0
    assert first.locator(".sc-math-error").count() == 0

    # Task list: disabled checkboxes, the first checked, no bullet text left.
    boxes = first.locator(".contains-task-list input[type=checkbox]")
    assert boxes.count() == 2
    assert boxes.evaluate_all("els => els.map(el => [el.disabled, el.checked])") == [
        [True, True],
        [True, False],
    ]
    assert "[x]" not in first.locator(".sc-body").inner_text()

    # Aligned table: classes, no style attribute anywhere in the replies, no CSP violation.
    aligns = (
        first.locator("table tr")
        .first.locator("th")
        .evaluate_all("els => els.map(el => el.className)")
    )
    assert aligns == ["sc-align-left", "sc-align-center", "sc-align-right"]
    assert first.locator("td.sc-align-right").count() == 3
    assert page.locator("#sc-messages [style]:not(.katex *)").count() == 0

    # Footnotes: each reference points at an element of its own message; ids unique on the page.
    for reply in (first, second):
        href = reply.locator("sup.footnote-ref a").get_attribute("href")
        assert href.startswith("#")
        assert reply.locator(f'[id="{href[1:]}"]').count() == 1
        assert reply.locator(".footnotes a.footnote-backref").count() == 1
        assert reply.locator("sup.footnote-ref a").get_attribute("target") is None
    ids = page.evaluate(
        "() => Array.from(document.querySelectorAll('#sc-messages [id]'), el => el.id)"
    )
    assert len(ids) == len(set(ids)) and len(ids) >= 4
    url = page.url
    first.locator("sup.footnote-ref a").click()
    focused = page.evaluate(
        "() => [document.activeElement.className,"
        " document.activeElement.closest('article').dataset.id, document.activeElement.innerText]"
    )
    assert focused[0] == "footnote-item"
    assert focused[1] == first.get_attribute("data-id")
    assert "The source, first." in focused[2]
    assert page.url == url and len(page.context.pages) == 1
    screenshot(page, "desktop")
    page.set_viewport_size(PHONE)
    first.locator(".sc-code").scroll_into_view_if_needed()
    screenshot(page, "phone")

    # The same text rendered again from the database.
    page.reload()
    wait_finished(page, 2)
    assert page.locator(".katex").count() == 8
    assert page.locator("span.hljs-keyword").count() >= 2
    assert_clean(page, browser_events)


def test_math_cannot_reach_out_of_katex(
    page: Any, login: Any, user: Any, simulator: Any, browser_events: Any
) -> None:
    """KaTeX runs with trust off: no links, ids, classes or styles of the model's choosing; an
    error shows the TeX source as text; SVG and MathML exist only inside KaTeX's output."""
    enable()
    simulator.next_reply(
        "$\\href{javascript:window.__pwned=1}{x}$ $\\url{javascript:alert(1)}$ "
        "$\\htmlId{sc-input}{y}$ $\\htmlStyle{position:fixed;inset:0}{z}$ "
        "$\\htmlClass{sc-app}{w}$ $\\color{red;position:fixed}{v}$ $\\frac{1}{$ "
        "$\\rule{500em}{500em}$ $\\includegraphics{https://evil.example/x.png}$"
    )
    page.add_init_script(CSP_PROBE)
    login(page, user)
    send(page, "Payloads")
    reply = wait_finished(page)
    assert reply.locator("a").count() == 0
    assert page.locator("#sc-messages .sc-body [id]").count() == 0
    assert page.locator("#sc-messages .sc-app").count() == 0
    fixed = reply.locator(".katex *").evaluate_all(
        "els => els.filter(el => getComputedStyle(el).position === 'fixed').length"
    )
    assert fixed == 0
    sizes = reply.locator(".katex-html *").evaluate_all(
        "els => els.map(el => el.getBoundingClientRect().width)"
    )
    assert max(sizes) < 1000  # \rule is capped by maxSize
    assert reply.locator(".sc-math-error").count() >= 1  # \frac{1}{ : its source, as text
    assert page.evaluate("window.__pwned") is None
    assert_clean(page, browser_events)


# Deltas that cut every construct in the middle: emphasis, inline code, a fence (its opener and
# its closer), a link, a table (before its delimiter row), display and inline math, a footnote.
STREAM_PIECES = [
    "Some *",
    "*bo",
    "ld te",
    "xt*",
    "* and `co",
    "de` here.\n\n`",
    "`",
    "`pyth",
    "on\nprint('hi')\n`",
    "`",
    "`\n\nSee [the do",
    "cs](https://exa",
    "mple.com/docs) now.\n\n| a",
    " | b |\n|--",
    "-|-",
    "--|\n| 1 | 2 |\n\n$",
    "$\nx^",
    "2\n$",
    "$\n\nInline $\\fr",
    "ac{1}{2}$ done",
    "[^",
    "1] too.\n\n[^1",
    "]: A note.",
]
RAW_MARKERS = ("*", "`", "$", "](", "|", "[^", "--")


def test_streaming_never_shows_half_a_construct_raw(
    page: Any, login: Any, user: Any, simulator: Any, screenshot: Any, browser_events: Any
) -> None:
    enable()
    simulator.token_delay = 0.06
    simulator.next_reply(pieces=STREAM_PIECES)
    # Every state the reply's text was in, recorded as the DOM changed (before any paint).
    page.add_init_script(
        """
        window.__states = [];
        new MutationObserver(function () {
          var el = document.querySelector('.sc-msg--assistant .sc-body');
          if (!el) return;
          var text = Array.from(el.childNodes).map(function (n) {
            // KaTeX's MathML keeps the TeX source for screen readers: not shown, not counted.
            var copy = n.cloneNode(true);
            if (copy.querySelectorAll) copy.querySelectorAll('.katex-mathml, .sc-code-bar')
              .forEach(function (m) { m.remove(); });
            return copy.textContent;
          }).join('');
          if (window.__states[window.__states.length - 1] !== text) window.__states.push(text);
        }).observe(document, { subtree: true, childList: true, characterData: true });
        """
    )
    page.add_init_script(CSP_PROBE)
    login(page, user)
    send(page, "Stream it")
    reply = wait_finished(page)
    screenshot(page, "finished")
    states = page.evaluate("window.__states")
    assert len(states) >= 8, states  # it streamed, in many renders
    raw = [(s, m) for s in states for m in RAW_MARKERS if m in s]
    assert raw == [], raw
    # Text only ever grew at the end or changed shape, never went back to an earlier state.
    assert states[-1].startswith("Some bold text and code here.")
    assert reply.locator(".sc-body strong").inner_text() == "bold text"
    assert reply.locator(".sc-body p code").inner_text() == "code"
    assert reply.locator(".sc-code code.hljs").inner_text().strip() == "print('hi')"
    assert reply.locator(".sc-body a[href='https://example.com/docs']").inner_text() == "the docs"
    assert reply.locator(".sc-body table td").count() == 2
    assert reply.locator(".katex").count() == 2
    assert reply.locator("sup.footnote-ref").count() == 1
    assert Message.objects.get(role="assistant").content == "".join(STREAM_PIECES)
    assert_clean(page, browser_events)


# render.streamingText, case by case: what a reply shows while it ends with each unfinished tail.
STREAMING_CASES = [
    ("Here is **bo", "Here is **bo**"),
    ("Here is **bold*", "Here is **bold**"),
    ("**bold** and _it", "**bold** and _it_"),
    ("~~gone", "~~gone~~"),
    ("Some **", "Some"),
    ("snake_case_name", "snake_case_name"),
    ("2 * 3 = 6", "2 * 3 = 6"),
    ("Text `co", "Text `co`"),
    ("**a `b", "**a `b`**"),
    ("`a **b", "`a **b`"),
    ("``", ""),
    ("```py", "```py\n```"),
    ("```python\nprint(1)\n``", "```python\nprint(1)\n```"),
    ("See [the do", "See the do"),
    ("See [the docs](https://ex", "See the docs"),
    ("![pic](http", ""),
    ("Done [link](https://x.example/) ok", "Done [link](https://x.example/) ok"),
    ("| a | b |", ""),
    ("| a | b |\n|---|", ""),
    ("| a | b |\n|---|---|\n| 1 | **x", "| a | b |\n|---|---|\n| 1 | **x**"),
    ("Para\n\n$$\nx^2", "Para\n\n"),
    ("Inline $x^", "Inline"),
    ("Costs $5 and", "Costs $5 and"),
    ("Para\n\n$", "Para\n\n"),
    ("Text \\(a+", "Text"),
    ("Ref[^1] here", "Ref here"),
    ("Ref[^1] here\n\n[^1]: note", "Ref[^1] here\n\n[^1]: note"),
    ("Items:\n-", "Items:\n"),
]


def test_streaming_text_closes_or_holds_back_each_unfinished_construct(
    page: Any, login: Any, user: Any
) -> None:
    login(page, user)
    page.wait_for_function("() => !!window.streamchatRender")
    got = page.evaluate(
        "cases => cases.map(c => window.streamchatRender.streamingText(c))",
        [case for case, _ in STREAMING_CASES],
    )
    assert list(zip([c for c, _ in STREAMING_CASES], got, strict=True)) == STREAMING_CASES


def theme(page: Any) -> list[str]:
    return page.evaluate(
        "() => [document.documentElement.dataset.scTheme,"
        " getComputedStyle(document.querySelector('.sc-app')).backgroundColor]"
    )


LIGHT = ["light", "rgb(255, 255, 255)"]
DARK = ["dark", "rgb(13, 17, 23)"]


def test_dark_mode_follows_the_system_and_a_toggle_remembered_per_user(
    page: Any, login: Any, user_factory: Any, simulator: Any, screenshot: Any, browser_events: Any
) -> None:
    enable()
    alice, bob = user_factory(), user_factory()
    page.add_init_script(CSP_PROBE)
    page.emulate_media(color_scheme="dark")
    login(page, alice)
    assert theme(page) == DARK
    assert page.locator("#sc-theme").inner_text() == "◐ Auto"
    send(page, "Hello")  # the default reply has a highlighted code block
    wait_finished(page)
    page.emulate_media(color_scheme="light")  # "system" follows the change
    page.wait_for_function("() => document.documentElement.dataset.scTheme === 'light'")
    assert theme(page) == LIGHT
    page.emulate_media(color_scheme="dark")

    page.click("#sc-theme")
    assert page.locator("#sc-theme").inner_text() == "☀ Light"
    assert theme(page) == LIGHT
    page.reload()
    assert theme(page) == LIGHT  # remembered, against the system's dark
    page.click("#sc-theme")
    assert theme(page) == DARK and page.locator("#sc-theme").inner_text() == "☾ Dark"
    page.set_viewport_size(DESKTOP)
    screenshot(page, "dark-desktop")
    page.set_viewport_size(PHONE)
    screenshot(page, "dark-phone")
    page.set_viewport_size(DESKTOP)
    page.emulate_media(color_scheme="light")
    page.reload()
    assert theme(page) == DARK  # the choice beats the system's light
    page.goto("/chat/tokens/")
    assert theme(page) == DARK  # and holds on the tokens page

    # Another user in the same browser has a choice of their own: none yet, so the system's.
    page.context.clear_cookies()
    login(page, bob)
    assert theme(page) == LIGHT
    assert page.locator("#sc-theme").inner_text() == "◐ Auto"
    keys = page.evaluate("() => Object.keys(localStorage).filter(k => k.endsWith(':theme'))")
    assert keys == [f"streamchat:{alice.pk}:theme"]
    assert_clean(page, browser_events)


def test_timestamps_jump_to_latest_and_plain_titles(
    page: Any, login: Any, user: Any, simulator: Any, screenshot: Any, browser_events: Any
) -> None:
    enable()
    page.add_init_script(CSP_PROBE)
    page.set_viewport_size(DESKTOP)
    simulator.token_delay = 0.01
    simulator.next_reply("\n\n".join(f"Paragraph {n} of a long reply." for n in range(1, 121)))
    login(page, user)
    send(page, "**Pelicans** and `code`: [a guide](https://x.example) _now_")

    # Titles: plain text of the first message's Markdown, in the header and the sidebar.
    shown = "Pelicans and code: a guide now"
    page.locator("#sc-conversations li a", has_text="Pelicans").wait_for()
    assert page.locator("#sc-title").inner_text() == shown
    link = page.locator("#sc-conversations li a").first
    assert link.inner_text().strip() == shown
    assert "**" in Conversation.objects.get().title  # the stored title is unchanged
    # Rename and Delete take no room from the title: they lie over it, shown on hover or focus.
    row = page.locator("#sc-conversations li").first
    assert link.bounding_box()["width"] == pytest.approx(row.bounding_box()["width"], abs=1)
    actions = row.locator(".sc-conversation-actions")
    box = link.bounding_box()
    # They cover only the end of the row: a click on the title opens it.
    assert actions.bounding_box()["x"] > box["x"] + box["width"] / 2
    page.hover("#sc-input")
    assert actions.evaluate("el => getComputedStyle(el).opacity") == "0"
    row.hover()
    assert actions.evaluate("el => getComputedStyle(el).opacity") == "1"
    page.hover("#sc-input")
    link.focus()
    page.keyboard.press("ArrowRight")  # the list is one Tab stop: → goes to a row's buttons
    assert page.evaluate("document.activeElement.dataset.action") == "rename"
    assert actions.evaluate("el => getComputedStyle(el).opacity") == "1"

    # Jump to latest: appears once the user scrolls up while the reply streams; the view stays.
    page.wait_for_function(
        "() => { var m = document.getElementById('sc-messages');"
        " return m.scrollHeight > m.clientHeight * 2; }"
    )
    assert page.locator("#sc-jump").is_hidden()
    page.evaluate("document.getElementById('sc-messages').scrollTop = 0")
    page.locator("#sc-jump").wait_for(state="visible")
    screenshot(page, "jump-to-latest")
    page.wait_for_function(
        "() => document.querySelector('.sc-msg--assistant .sc-body').textContent.length > 2000"
    )
    assert page.evaluate("document.getElementById('sc-messages').scrollTop") == 0
    page.click("#sc-jump")
    assert page.locator("#sc-jump").is_hidden()
    at_bottom = (
        "() => { var m = document.getElementById('sc-messages');"
        " return m.scrollHeight - m.scrollTop - m.clientHeight < 80; }"
    )
    assert page.evaluate(at_bottom)
    reply = wait_finished(page)
    assert page.evaluate(at_bottom)  # it followed the rest of the reply
    assert page.locator("#sc-jump").is_hidden()

    # Timestamps: both messages, from their created time (the page's clock while live, the
    # server's after a reload).
    def stamps() -> list[Any]:
        return page.locator(".sc-msg time.sc-time").evaluate_all(
            "els => els.map(el => [el.dateTime, el.textContent, el.title])"
        )

    live = stamps()
    assert len(live) == 2 and all(s[0] and s[1] and s[2] for s in live)
    page.reload()
    reply = wait_finished(page)
    stored = [m.created for m in Message.objects.order_by("created", "id") if m.role != "system"]
    reloaded = stamps()
    assert [datetime.fromisoformat(s[0].replace("Z", "+00:00")) for s in reloaded] == [
        c.replace(microsecond=c.microsecond // 1000 * 1000) for c in stored
    ]
    assert reply.locator("time.sc-time").inner_text() == reloaded[1][1]
    page.set_viewport_size(PHONE)
    screenshot(page, "phone")
    assert_clean(page, browser_events)


def test_xss_reply_title_is_still_its_text_after_markdown_is_stripped(
    page: Any, login: Any, user: Any, simulator: Any, browser_events: Any
) -> None:
    """Plain-text titles come from markdown-it's parse, never from HTML: markup stays text."""
    ChatModel.objects.create(model_id="simulator/echo", enabled=True, is_default=True)
    login(page, user)
    title = '<img src=x onerror="window.__pwned=1"> **<b>bold</b>**'
    send(page, title)
    wait_finished(page)
    page.locator("#sc-conversations li a").first.wait_for()
    shown = '<img src=x onerror="window.__pwned=1"> <b>bold</b>'
    assert page.locator("#sc-title").inner_text() == shown
    assert page.locator(".sc-header img, #sc-sidebar img, .sc-header b, #sc-sidebar b").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert browser_events.page_errors == []
