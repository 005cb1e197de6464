"""Templates never log their context (SEC-07): a variable missing from a template's context makes
Django's ``django.template`` logger write, at DEBUG, an exception whose message holds the whole
context, a new personal token included. Every page streamchat renders (the chat, the tokens page
with a new token, the demo's home and login pages, every admin page of streamchat's models) is
rendered with ``string_if_invalid`` set to a marker, and with that logger at DEBUG: no marker in
any page, no line about a missing variable in any of streamchat's or the demo's templates."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from streamchat.models import PersonalToken
from tests.test_admin_pages import objects, page_urls  # noqa: F401  (a fixture, and its pages)

pytestmark = pytest.mark.django_db

MARKER = "@@MISSING-VARIABLE@@"
ROOT = Path(__file__).resolve().parent.parent
# Templates that are ours: streamchat's and the demo site's (Django's admin templates are not).
OURS = (ROOT / "streamchat" / "templates", ROOT / "templates")


@pytest.fixture
def strict_templates(settings: Any, caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    templates = [dict(engine) for engine in settings.TEMPLATES]
    templates[0]["OPTIONS"] = {**templates[0].get("OPTIONS", {}), "string_if_invalid": MARKER}
    settings.TEMPLATES = templates
    caplog.set_level(logging.DEBUG, logger="django.template")
    return caplog


def our_template_names() -> set[str]:
    """Every template of ours, by the name a loader finds it under."""
    return {str(path.relative_to(folder)) for folder in OURS for path in folder.rglob("*.html")}


def missing_variables(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The ``django.template`` lines about a variable missing from one of our templates."""
    ours = our_template_names()
    lines = []
    for record in caplog.records:
        if record.name != "django.template":
            continue
        match = re.match(
            r"Exception while resolving variable '(.*)' in template '(.*)'\.",
            str(record.getMessage()),
        )
        if match is None or match.group(2) in ours or match.group(2) == "unknown":
            lines.append(record.getMessage())
    return lines


def test_sec07_streamchat_pages_render_without_a_missing_variable(
    client: Any, user: Any, strict_templates: pytest.LogCaptureFixture
) -> None:
    pages = {"login": client.get(reverse("login")), "home (anonymous)": client.get("/")}
    client.force_login(user)
    pages["home"] = client.get("/")
    pages["chat"] = client.get(reverse("streamchat:chat"))
    pages["tokens"] = client.get(reverse("streamchat:tokens"))
    made = client.post(reverse("streamchat:tokens"), {"action": "create", "name": "laptop"})
    assert made.status_code == 303  # POST/redirect/GET: the GET shows the new token
    made = client.get(made["Location"])
    pages["tokens, with a new token"] = made
    pages["revoke, asked first"] = client.get(
        reverse("streamchat:token-revoke", args=[PersonalToken.objects.get(user=user).pk])
    )
    pages["tokens, a form error"] = client.post(reverse("streamchat:tokens"), {"action": "create"})
    assert PersonalToken.objects.filter(user=user).count() == 1
    for name, response in pages.items():
        assert response.status_code in (200, 400), name
        assert MARKER not in response.content.decode(), f"a missing variable on the {name} page"
    assert not missing_variables(strict_templates)
    # Not a line of that logger names the new token (it would be in a logged context).
    token = re.search(r'value="(sc-[^"]+)"', made.content.decode())
    assert token is not None
    assert token.group(1) not in strict_templates.text


def test_sec07_admin_pages_of_streamchat_render_without_a_missing_variable(
    admin_client: Any,
    objects: Any,  # noqa: F811  (the fixture imported above)
    strict_templates: pytest.LogCaptureFixture,
) -> None:
    for url, status in page_urls(objects):
        response = admin_client.get(url)
        assert response.status_code == status, url
    assert not missing_variables(strict_templates)
