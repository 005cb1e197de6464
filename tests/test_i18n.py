"""Translations: German and French ship with the app (streamchat/locale), the demo picks the
language from the site's LANGUAGE_CODE or the browser's Accept-Language (LocaleMiddleware), and
the chat page, the tokens page, JSON errors and limit refusals come out in it. The shipped .mo
files are the compiled .po files, every message translated. Pages touch the ORM (SQLite and
PostgreSQL)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from streamchat.models import RateLimit

pytestmark = pytest.mark.django_db

LOCALE = Path(__file__).resolve().parent.parent / "streamchat" / "locale"
LANGUAGES = ("de", "fr")

# A few strings of each page, in each language.
EXPECTED = {
    "de": {
        "chat": ['<html lang="de">', "Neuer Chat", "Senden", "Unterhaltungen durchsuchen"],
        "tokens": ["API-Tokens", "Token erstellen", "Noch keine Tokens.", "In 30 Tagen"],
        "not_found": "Diese Unterhaltung gibt es nicht.",
        "switched_off": "Das Senden ist für Ihr Konto abgeschaltet (requests_per_day ist 0).",
    },
    "fr": {
        "chat": ['<html lang="fr">', "Nouvelle discussion", "Envoyer", "Vos conversations"],
        "tokens": ["Jetons d’API", "Créer le jeton", "Aucun jeton pour l’instant.", "Dans 30 jours"],
        "not_found": "Cette conversation n’existe pas.",
        "switched_off": "L’envoi est désactivé pour votre compte (requests_per_day vaut 0).",
    },
}


def check_language(client: Client, language: str, user: Any, **headers: str) -> None:
    expected = EXPECTED[language]
    chat = client.get(reverse("streamchat:chat"), headers=headers).content.decode()
    for text in expected["chat"]:
        assert text in chat, (language, text)
    assert "Send</button>" not in chat
    # The page loads Django's JavaScript catalog, which answers in the same language.
    catalog = reverse("streamchat:jsi18n")
    assert f'<script src="{catalog}" defer></script>' in chat
    js = client.get(catalog, headers=headers)
    assert js.status_code == 200 and "django.gettext" in js.content.decode()
    tokens = client.get(reverse("streamchat:tokens"), headers=headers).content.decode()
    for text in expected["tokens"]:
        assert text.replace("’", "&#x27;") in tokens or text in tokens, (language, text)
    missing = client.get(reverse("streamchat:api-conversation", args=[999999]), headers=headers)
    assert missing.status_code == 404
    assert missing.json() == {"code": "not_found", "message": expected["not_found"]}
    # A limit refusal, over HTTP (Server-Sent Events), before any upstream call.
    RateLimit.objects.update_or_create(
        scope="user", user=user, defaults={"requests_per_day": 0}
    )
    refused = client.post(
        reverse("streamchat:api-stream"),
        {"client_id": f"i18n-{language}", "content": "Hallo"},
        content_type="application/json",
        headers=headers,
    )
    assert refused.status_code == 429
    assert refused.json()["message"] == expected["switched_off"]


@pytest.fixture
def client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


# transaction=True: the SSE view refuses from another thread, which must see the committed limit.
@pytest.mark.django_db(transaction=True)
def test_language_code_de_translates_the_pages_and_errors(
    client: Client, user: Any, settings: Any
) -> None:
    settings.LANGUAGE_CODE = "de"
    check_language(client, "de", user)


@pytest.mark.django_db(transaction=True)
def test_accept_language_fr_translates_the_pages_and_errors(client: Client, user: Any) -> None:
    check_language(client, "fr", user, accept_language="fr-FR,fr;q=0.9,en;q=0.5")
    # The next request without the header is English again: nothing sticks to the user.
    english = client.get(reverse("streamchat:chat")).content.decode()
    assert '<html lang="en' in english and "Send</button>" in english


def test_the_export_speaks_the_language_too(client: Client, user: Any) -> None:
    from streamchat.models import Conversation

    conversation = Conversation.objects.create(owner=user, title="x")
    text = client.get(
        reverse("streamchat:api-conversation-export", args=[conversation.pk]) + "?format=md",
        headers={"accept-language": "de"},
    ).content.decode()
    assert "- Begonnen: " in text and "- Exportiert: " in text


@pytest.mark.once
@pytest.mark.parametrize("domain", ["django", "djangojs"])  # djangojs: the chat page's scripts
@pytest.mark.parametrize("language", LANGUAGES)
def test_every_message_is_translated_and_the_mo_is_the_compiled_po(
    language: str, domain: str, tmp_path: Path
) -> None:
    msgfmt = shutil.which("msgfmt")
    if msgfmt is None:
        pytest.skip("msgfmt (gettext) is not installed")
    po = LOCALE / language / "LC_MESSAGES" / f"{domain}.po"
    compiled = tmp_path / f"{domain}.mo"
    result = subprocess.run(
        [msgfmt, "--check", "--statistics", "-o", str(compiled), str(po)],
        capture_output=True,
        text=True,
        check=True,
    )
    # "N translated messages." and nothing fuzzy or untranslated.
    assert "fuzzy" not in result.stderr and "untranslated" not in result.stderr, result.stderr
    assert compiled.read_bytes() == (po.with_suffix(".mo")).read_bytes(), (
        f"{po.with_suffix('.mo')} is stale: run msgfmt -o it from the .po"
    )


# -- The page's scripts speak it too (Django's JavaScript catalog), in Chromium ------------------


@pytest.mark.browser
@pytest.mark.once
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("live_daphne", [{"STREAMCHAT_LIVE_LANGUAGE_CODE": "de"}], indirect=True)
def test_language_code_de_translates_the_chat_pages_scripts(
    live_daphne: Any, page: Any, login: Any, user: Any, browser_events: Any, screenshot: Any
) -> None:
    """With LANGUAGE_CODE = "de" (and a browser asking for a language the site does not offer),
    what the scripts write is German: texts from the JS catalog (the empty list, a reply's
    tokens, the theme button) and the <template>s they clone (a reply's buttons)."""
    page.set_extra_http_headers({"Accept-Language": "ja"})
    login(page, user)
    assert page.get_attribute("html", "lang") == "de"
    assert page.get_attribute("#sc-input", "placeholder").startswith("Nachricht")
    empty = page.locator("#sc-list-empty")
    empty.wait_for()
    assert empty.inner_text() == "Noch keine Unterhaltungen."
    theme = page.get_attribute("#sc-theme", "title")
    assert theme == "Design: automatisch (wie das System). Zum Ändern klicken."

    page.fill("#sc-input", "Hallo")
    page.press("#sc-input", "Enter")
    assert page.locator("#sc-stop").inner_text() == "Stopp"
    reply = page.locator('.sc-msg--assistant[data-status="complete"]')
    reply.wait_for()
    assert reply.locator(".sc-role").inner_text() == "Assistent"
    assert reply.locator("[data-action=regenerate]").inner_text() == "Neu erzeugen"
    assert reply.locator("[data-action=copy]").get_attribute("aria-label") == (
        "Diese Antwort kopieren"
    )
    meta = reply.locator(".sc-meta")
    meta.locator("text=Tokens").wait_for()  # usage arrives with the end of the reply
    assert " ein, " in meta.inner_text() and " aus)" in meta.inner_text(), meta.inner_text()
    page.locator(".sc-msg--user [data-action=edit]").click()
    assert page.locator(".sc-edit [data-edit=send]").inner_text() == "Senden"
    screenshot(page, "de")
    assert browser_events.page_errors == [] and browser_events.console_errors == []
