"""Browser contexts at the two sizes the chat page is tested at, for tests that need more than the
``page`` fixture's one desktop context (a phone's ``is_mobile``/``has_touch``, a dark theme).

``open_page(browser, live_daphne, events, size="mobile", color_scheme="dark")`` returns a page on
the live server with the same guards as the ``page`` fixture (requests to other origins blocked and
recorded, dialogs dismissed and recorded, script errors recorded).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

DESKTOP = {"viewport": {"width": 1280, "height": 800}}
# A phone: 390×844 CSS px, touch, the mobile viewport meta tag honoured.
MOBILE = {
    "viewport": {"width": 390, "height": 844},
    "is_mobile": True,
    "has_touch": True,
    "device_scale_factor": 2,
}
SIZES = {"desktop": DESKTOP, "mobile": MOBILE}

# The drawer slides in (a short CSS transition): until it stands still, boxes and pictures of it
# are those of a moving thing.
DRAWER_STILL = "() => getComputedStyle(document.getElementById('sc-sidebar')).transform === 'none'"


def open_page(
    browser: Any, base_url: str, events: Any, size: str = "desktop", color_scheme: str = "light"
) -> Any:
    context = browser.new_context(base_url=base_url, color_scheme=color_scheme, **SIZES[size])
    return guarded_page(context, base_url, events)


def guarded_page(context: Any, base_url: str, events: Any) -> Any:
    """A new page of ``context`` whose requests to other origins than ``base_url``'s are blocked
    and recorded, and whose dialogs (dismissed), script errors and console errors are recorded
    in ``events`` (a ``BrowserEvents``)."""
    context.set_default_timeout(10_000)
    own = urlsplit(base_url)

    def guard(route: Any) -> None:
        url = urlsplit(route.request.url)
        same_origin = (url.hostname, url.port) == (own.hostname, own.port)
        if url.scheme in ("data", "blob", "about") or same_origin:
            route.continue_()
        else:
            events.foreign_requests.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    page = context.new_page()

    def on_dialog(dialog: Any) -> None:
        events.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda error: events.page_errors.append(str(error)))
    page.on(
        "console",
        lambda message: (
            events.console_errors.append(message.text) if message.type == "error" else None
        ),
    )
    return page
