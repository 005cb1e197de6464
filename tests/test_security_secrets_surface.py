"""SEC-07, the whole error surface: a key saved through admin, an upstream that echoes it in every
field and form of its errors, and every place a failure is rendered.

The simulator's ``leak=full,bare,piece`` puts the request's own key into its error bodies three
ways (whole, without ``sk-or-v1-``, a 12-character piece of its middle) and in every field
(``message``, ``metadata.reasons``, ``metadata.raw``, ``provider_name`` and the rest), as a 401,
402, 403 or 500 answer, a mid-stream error chunk, and as the provider's name of a reply that
succeeds. With every logger at DEBUG and error mail on (``AdminEmailHandler`` with its HTML page),
no 12-character piece of the key's secret part may appear in a websocket frame, an SSE event, an
OpenAI-compatible response, a log line, a mail, any table of the database, or an admin page.

Then the failures that render locals: a POST to the admin key form that fails (the DEBUG technical
page and the error mail), and a failure inside ``keys.usable_keys`` after it decrypted a key.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core import mail
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils.log import AdminEmailHandler
from django.views.debug import technical_500_response

from streamchat import crypto
from streamchat.keys import usable_keys
from streamchat.models import ApiKey, ChatModel, Message, Usage
from streamchat.streaming.hub import get_hub
from tests.test_security_http_secrets import (  # noqa: F401  (debug_server is a fixture)
    ask,
    debug_server,
    ended,
    read_mails,
)
from tests.test_security_secrets import LOGGERS, dump_database

pytestmark = [pytest.mark.django_db(transaction=True)]

KEY = "sk-or-v1-" + "c0ffee5ec07" * 5 + "a1b2c3d4e"  # 64 characters after the prefix
OTHER_KEY = "sk-or-v1-" + "5a1ad0b0e" * 7 + "f"
FORMS = "full,bare,piece"
SCENARIOS = {
    "401": (f"simulator/key-error?status=401&leak={FORMS}", "invalid_key"),
    "402": (f"simulator/key-error?status=402&leak={FORMS}", "out_of_credits"),
    "403": (f"simulator/moderation?leak={FORMS}", "moderation"),
    "500": (f"simulator/server-error?status=500&leak={FORMS}", "upstream_unavailable"),
    "mid-stream": (f"simulator/error-mid?after=2&leak={FORMS}", "stream_error"),
    "provider name": (f"openai/gpt-4o-mini?leak={FORMS}", None),
}


def pieces(secret: str, size: int = 12) -> list[str]:
    body = secret.removeprefix("sk-or-v1-")
    return [body[i : i + size] for i in range(len(body) - size + 1)]


def assert_no_piece(text: str, where: str, secret: str = KEY) -> None:
    leaked = [piece for piece in pieces(secret) if piece in text]
    assert not leaked, f"a piece of the key is in {where}: {leaked[:3]}"


@pytest.fixture
def mail_on(settings: Any) -> Iterator[list[Any]]:
    """Error mail as a site sends it, with the HTML error page attached, to ADMINS (locmem)."""
    settings.ADMINS = [("Admin", "admin@example.com")]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    handler = AdminEmailHandler(include_html=True)
    handler.setLevel(logging.ERROR)
    root = logging.getLogger()
    root.addHandler(handler)
    mail.outbox = []
    try:
        yield mail.outbox
    finally:
        root.removeHandler(handler)


def mail_texts(outbox: list[Any]) -> list[str]:
    texts = []
    for message in outbox:
        texts += [message.subject, message.body]
        texts += [content for content, _ in getattr(message, "alternatives", [])]
    return texts


@pytest.fixture
def everything_logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    for name in (*LOGGERS, "django.template", "django.request", "django.db.backends"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def log_texts(caplog: pytest.LogCaptureFixture) -> str:
    lines = [caplog.text]
    for record in caplog.records:
        lines.append(f"{record.getMessage()} {record.args!r} {record.exc_text or ''}")
    return "\n".join(lines)


def save_key_in_admin(client: Client, secret: str, label: str, priority: int) -> ApiKey:
    response = client.post(
        reverse("admin:streamchat_apikey_add"),
        {"label": label, "secret": secret, "is_active": "on", "priority": str(priority)},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    return ApiKey.objects.get(label=label)


@pytest.fixture
def upstream(simulator: Any, settings: Any, admin_client: Client) -> Any:
    settings.STREAMCHAT = {
        **settings.STREAMCHAT,
        "BASE_URL": simulator.base_url,
        "API_KEY": None,
        "MAX_RETRIES": 1,
        "BACKOFF_BASE": 0.01,
    }
    save_key_in_admin(admin_client, KEY, "main", 1)
    simulator.add_key(KEY)
    return simulator


def admin_pages(client: Client) -> dict[str, str]:
    """Every admin page that shows a key, a reply's error or a usage row."""
    urls = [
        reverse("admin:streamchat_apikey_changelist"),
        reverse("admin:streamchat_message_changelist"),
        reverse("admin:streamchat_usage_changelist"),
        reverse("admin:streamchat_conversation_changelist"),
        reverse("admin:streamchat_usage_dashboard"),
    ]
    urls += [reverse("admin:streamchat_apikey_change", args=[k.pk]) for k in ApiKey.objects.all()]
    urls += [reverse("admin:streamchat_message_change", args=[m.pk]) for m in Message.objects.all()]
    urls += [reverse("admin:streamchat_usage_change", args=[u.pk]) for u in Usage.objects.all()]
    pages = {}
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        pages[url] = response.content.decode()
    return pages


def conversation_json(user: Any) -> str:
    client = Client()
    client.force_login(user)
    conversation = Message.objects.select_related("conversation").first().conversation
    return client.get(f"/chat/api/conversations/{conversation.pk}/").content.decode()


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_sec07_a_key_echoed_in_every_field_and_form_is_nowhere_on_the_websocket_side(
    upstream, user, chat_socket, admin_client, everything_logged, mail_on, scenario
):
    model, code = SCENARIOS[scenario]
    await ChatModel.objects.acreate(model_id=model, enabled=True, is_default=True)
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "surface", "content": "Hello"})
    ack = await socket.recv_until("ack")
    _, finished = await socket.reply(ack["reply"])
    for run in list(get_hub().runs.values()):
        await asyncio.wait_for(run.done.wait(), 10)
    await asyncio.sleep(0.1)  # the key's bookkeeping (last used, last error) lands off the path
    assert (finished["error"] or {}).get("code") == code
    assert upstream.chat_requests[-1].headers["Authorization"] == f"Bearer {KEY}"

    assert_no_piece(json.dumps(socket.frames), "a websocket frame")
    assert_no_piece(log_texts(everything_logged), "a log line")
    for text in mail_texts(mail_on):
        assert_no_piece(text, "an error mail")
    assert_no_piece(await sync_to_async(dump_database)(), "the database")
    if code in ("invalid_key", "out_of_credits"):  # the key was marked failing, and says why
        key = await ApiKey.objects.aget()
        assert key.last_error and "…" in key.last_error
    for url, page in (await sync_to_async(admin_pages)(admin_client)).items():
        assert_no_piece(page, f"the admin page {url}")
    assert_no_piece(await sync_to_async(conversation_json)(user), "the conversation's JSON")
    await socket.close()


@pytest.mark.parametrize("path", ["sse", "openai-stream", "openai"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_sec07_http_a_key_echoed_in_every_field_and_form_is_nowhere(
    debug_server,  # noqa: F811
    simulator,
    admin_client,
    user,
    scenario,
    path,
):
    model, code = SCENARIOS[scenario]
    await sync_to_async(save_key_in_admin)(admin_client, KEY, "main", 1)
    simulator.add_key(KEY)
    await ChatModel.objects.acreate(model_id=model, enabled=True, is_default=True)
    start = debug_server.log_path.stat().st_size
    mailed = set(debug_server.mail.glob("*")) if debug_server.mail.exists() else set()
    answer, error, _ = await ask(debug_server, user, path, model)
    await ended()
    assert (error or {}).get("code") == code, answer[:2000]
    assert_no_piece(answer, f"the {path} response")
    log = debug_server.log_path.read_bytes()[start:].decode(errors="replace")
    assert_no_piece(log, "the server's log")
    for text in [t for f in set(debug_server.mail.glob("*")) - mailed for t in read_mails(f)]:
        assert_no_piece(text, "the error mail")
    assert_no_piece(await sync_to_async(dump_database)(), "the database")


# --- Failures that render locals ----------------------------------------------------------------


class EncryptionBackendDown(RuntimeError):
    pass


def failing_fernet(working_calls: int) -> Any:
    """``crypto.fernet`` that works ``working_calls`` times, then fails (a broken backend)."""
    real = crypto.fernet
    calls = {"count": 0}

    def fernet() -> Any:
        calls["count"] += 1
        if calls["count"] > working_calls:
            raise EncryptionBackendDown("the encryption backend failed")
        return real()

    return fernet


def test_sec07_a_failing_post_to_the_key_form_shows_no_key_on_the_debug_page_or_in_the_mail(
    admin_client, settings, monkeypatch, mail_on, everything_logged
):
    monkeypatch.setattr(crypto, "fernet", failing_fernet(0))
    admin_client.raise_request_exception = False
    form = {"label": "new", "secret": KEY, "is_active": "on", "priority": "1"}
    url = reverse("admin:streamchat_apikey_add")

    settings.DEBUG = True  # the technical 500 page
    page = admin_client.post(url, form)
    assert page.status_code == 500
    html = page.content.decode()
    assert "EncryptionBackendDown" in html and "Local vars" in html  # the page shows locals
    assert "ApiKeyForm" in html or "save" in html
    assert_no_piece(html, "the DEBUG technical 500 page")

    settings.DEBUG = False  # the error mail, with its HTML page
    assert admin_client.post(url, form).status_code == 500
    assert mail_on, "the 500 is mailed to ADMINS"
    for text in mail_texts(mail_on):
        assert_no_piece(text, "the error mail")
    assert_no_piece(log_texts(everything_logged), "a log line")


def failure_inside_usable_keys() -> BaseException:
    """The exception ``usable_keys`` raised after decrypting the first key (traceback from here:
    none of the test's own locals)."""
    try:
        usable_keys()
    except EncryptionBackendDown as error:
        return error
    raise AssertionError("usable_keys did not fail")


def test_sec07_a_failure_inside_usable_keys_shows_no_key_in_the_mail_or_the_debug_page(
    admin_client, settings, monkeypatch, mail_on, everything_logged
):
    save_key_in_admin(admin_client, KEY, "main", 1)
    save_key_in_admin(admin_client, OTHER_KEY, "backup", 2)
    monkeypatch.setattr(crypto, "fernet", failing_fernet(1))
    error = failure_inside_usable_keys()
    request = RequestFactory().get("/chat/")

    settings.DEBUG = True
    html = technical_500_response(request, type(error), error, error.__traceback__).content
    html = html.decode()
    assert "usable_keys" in html and "Local vars" in html
    settings.DEBUG = False
    logging.getLogger("django.request").error(
        "Internal Server Error: /chat/",
        exc_info=(type(error), error, error.__traceback__),
        extra={"status_code": 500, "request": request},
    )
    assert mail_on
    for text in [html, *mail_texts(mail_on)]:
        assert_no_piece(text, "the error page or mail")
    assert_no_piece(log_texts(everything_logged), "a log line")
