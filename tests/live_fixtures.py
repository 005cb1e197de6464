"""Fixtures for live servers (Daphne on loopback) and headless Chromium (Playwright, sync API).

``live_daphne``   a real Daphne process serving the demo (``tests.settings``) on a free port, on the
                  test's own database, with the ``simulator`` fixture as OpenRouter. Stopped after
                  the test. Tests using it need ``pytest.mark.django_db(transaction=True)``: rows
                  they create must be committed for the server process to see them.
``browser``       Debian's Chromium (never a downloaded one), headless, with a fresh temporary
                  profile; one per test (see below).
``page``          a Playwright page in a fresh context whose ``base_url`` is the live server, so
                  ``page.goto("/chat/")`` works. Dialogs are dismissed and recorded, requests to
                  any other origin are blocked and recorded: see ``browser_events``.
``login``         ``login(page, user)``: logs in through the site's login page.
``screenshot``    ``screenshot(page, "state")``: test-artifacts/<test>-<state>.png.

Why one Chromium per test: Playwright's sync API keeps an asyncio loop running in the main thread
while it is started, which breaks every pytest-asyncio test that would run meanwhile, and makes
Django refuse ORM calls ("async context"). So Playwright only lives inside a browser test, and
``DJANGO_ALLOW_ASYNC_UNSAFE`` is set only while it does (the ORM calls of such a test are plain
sync calls in the main thread, which is what the check guards).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlsplit
from urllib.request import urlopen

import pytest

from tests.services import chromium
from tests.ui_contexts import guarded_page

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:120]


# --- Daphne ------------------------------------------------------------------------------------


@pytest.fixture
def live_daphne(
    transactional_db: None, simulator: Any, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """A Daphne process on this test's database, talking to the simulator; ``.url``, ``.ws_url``.
    More environment for it (``tests/settings.py`` reads it) by indirect parametrization:
    ``@pytest.mark.parametrize("live_daphne", [{"STREAMCHAT_LIVE_…": "…"}], indirect=True)``."""
    from tests.servers import DaphneServer

    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / f"daphne-{_slug(request.node.name)}.log"
    server = DaphneServer(simulator=simulator, log=log, env=getattr(request, "param", None))
    try:
        yield server
    finally:
        server.stop()


# --- Chromium ----------------------------------------------------------------------------------


@dataclass
class BrowserEvents:
    """What a page did that a test may want to forbid: dialogs, foreign requests, script errors."""

    origin: str
    dialogs: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


@pytest.fixture
def browser_events(live_daphne: Any) -> BrowserEvents:
    return BrowserEvents(origin=live_daphne.url)


@pytest.fixture
def browser(live_daphne: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Headless Debian Chromium with a fresh profile, for the live server (started first, so the
    server and the test database outlive the browser)."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any, live_daphne: Any, browser_events: BrowserEvents) -> Iterator[Any]:
    """A fresh context (no cookies, no storage) and page on the live server."""
    _require_static_files(live_daphne.url)
    context = browser.new_context(base_url=live_daphne.url, viewport={"width": 1200, "height": 850})
    page = guarded_page(context, live_daphne.url, browser_events)
    try:
        yield page
    finally:
        context.close()


def _require_static_files(base_url: str) -> None:
    """Pages are useless without their CSS and JS: say so plainly rather than time out later."""
    from django.templatetags.static import static

    url = base_url + static("streamchat/chat/main.js")
    try:
        with urlopen(url, timeout=5) as response:
            if response.status == 200:
                return
    except HTTPError as error:
        status: Any = error.code
    else:
        status = response.status
    pytest.fail(
        f"The live server does not serve static files ({url} answered {status}): the demo's ASGI "
        "app or URLconf must serve them under Daphne when DEBUG is on."
    )


@pytest.fixture
def login() -> Callable[..., None]:
    """``login(page, user, next="/chat/")``: log in through the site's login form."""
    from django.conf import settings
    from django.shortcuts import resolve_url

    def log_in(page: Any, user: Any, next: str = "/chat/") -> None:
        page.goto(f"{resolve_url(settings.LOGIN_URL)}?next={next}")
        page.fill("input[name=username]", user.get_username())
        page.fill("input[name=password]", user.raw_password)
        with page.expect_navigation():
            page.press("input[name=password]", "Enter")
        assert urlsplit(page.url).path == next, f"login failed, at {page.url}"

    return log_in


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Callable[[Any, str], Path]:
    """``screenshot(page, "streaming")`` saves test-artifacts/<test>-streaming.png."""

    def take(page: Any, state: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{_slug(request.node.name)}-{_slug(state)}.png"
        page.screenshot(path=str(path), full_page=False)
        return path

    return take
