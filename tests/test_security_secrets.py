"""SEC-07: with every logger at DEBUG and OpenRouter answering 401, 402, 500, a mid-stream error (or
a normal reply), the API key appears in no log line, no websocket frame and no stored row (other
than its ciphertext), nor in Django's error page or error mail. SEC-01/02/04/05 are
tests/test_admin_keys.py, tests/test_crypto.py and tests/test_keys.py."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from cryptography.fernet import Fernet
from django.db import connection
from django.test import RequestFactory
from django.views.debug import ExceptionReporter, technical_500_response

from streamchat.crypto import encrypt
from streamchat.keys import key_hint
from streamchat.models import ApiKey, ChatModel, Message
from streamchat.streaming.hub import get_hub

pytestmark = [pytest.mark.django_db(transaction=True)]

SECRET = "sk-or-v1-5ec07a11b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071829"
LOGGERS = ("", "streamchat", "openai", "httpx", "httpx2", "httpcore", "httpcore2", "django")
LOGGERS += ("asyncio", "channels", "daphne", "hpack", "urllib3")


def pieces(secret: str, size: int = 12) -> list[str]:
    """Every ``size``-character piece of the key's secret part (after ``sk-or-v1-``)."""
    body = secret.removeprefix("sk-or-v1-")
    return [body[i : i + size] for i in range(len(body) - size + 1)]


def assert_no_secret(text: str, where: str) -> None:
    assert SECRET not in text, f"the key is in {where}"
    leaked = [p for p in pieces(SECRET) if p in text]
    assert not leaked, f"a piece of the key is in {where}: {leaked[:3]}"


def assert_no_piece_of(secret: str, text: str) -> None:
    leaked = [p for p in pieces(secret) if p in text]
    assert not leaked, f"a piece of {secret[:12]}… is in {text!r}"


def dump_database() -> str:
    """Every value of every table as text, except the ciphertext column (what a dump shows)."""
    values = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            columns = [c[0] for c in cursor.description]
            for row in cursor.fetchall():
                values += [
                    str(v) for c, v in zip(columns, row, strict=True) if c != "secret_encrypted"
                ]
    return "\n".join(values)


@pytest.fixture
def upstream(simulator, settings, caplog):
    settings.STREAMCHAT = {
        **settings.STREAMCHAT,
        "BASE_URL": simulator.base_url,
        "API_KEY": None,
        "MAX_RETRIES": 1,
        "BACKOFF_BASE": 0.01,
    }
    ApiKey.objects.create(
        label="main", secret_encrypted=encrypt(SECRET), hint=key_hint(SECRET), priority=1
    )
    simulator.add_key(SECRET)
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    return simulator


SCENARIOS = {
    "ok": ("openai/gpt-4o-mini", "complete", None),
    "401": ("openai/gpt-4o-mini", "error", "invalid_key"),
    "402": ("openai/gpt-4o-mini", "error", "out_of_credits"),
    "500": ("simulator/server-error?status=500", "error", "upstream_unavailable"),
    "mid-stream": ("simulator/error-mid?after=3", "error", "stream_error"),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_sec07_the_key_is_in_no_log_frame_or_row(
    upstream, user, chat_socket, caplog, scenario
):
    model, status, code = SCENARIOS[scenario]
    if scenario == "401":
        upstream.revoke_key(SECRET)
    elif scenario == "402":
        upstream.add_key(SECRET, credits=0)
    await ChatModel.objects.acreate(model_id=model, enabled=True, is_default=True)
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "sec07", "content": "Hello"})
    ack = await socket.recv_until("ack")
    _, finished = await socket.reply(ack["reply"])
    for run in list(get_hub().runs.values()):
        await asyncio.wait_for(run.done.wait(), 10)
    await asyncio.sleep(0.1)  # let the key bookkeeping tasks (last used, last error) land
    assert finished["status"] == status
    assert (finished["error"] or {}).get("code") == code
    assert upstream.chat_requests[-1].headers["Authorization"] == f"Bearer {SECRET}"

    records = [r for r in caplog.records]
    assert any(r.name.startswith(("openai", "httpx", "httpcore")) for r in records)  # at DEBUG
    for record in records:
        text = f"{record.getMessage()} {record.args!r} {record.exc_text or ''}"
        assert_no_secret(text, f"log line of {record.name}")
    assert_no_secret(caplog.text, "the formatted log")
    assert_no_secret(json.dumps(socket.frames), "a websocket frame")
    assert_no_secret(await asyncio.to_thread(dump_database), "the database")
    await socket.close()


async def test_sec07_a_key_echoed_by_upstream_is_masked(upstream, user, chat_socket):
    echoed = "sk-or-v1-0123456789abcdef0123456789abcdef"
    model = f"simulator/error-mid?after=2&message=Bad+key+{echoed}+rejected"
    await ChatModel.objects.acreate(model_id=model, enabled=True, is_default=True)
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "echo", "content": "Hello"})
    ack = await socket.recv_until("ack")
    _, finished = await socket.reply(ack["reply"])
    message = finished["error"]["message"]
    # Masked as "sk-or-…", or as a known key's hint when it overlaps one (the simulator's own).
    assert "Bad key" in message and echoed not in message and "…" in message
    assert_no_piece_of(echoed, message)
    for run in list(get_hub().runs.values()):
        await asyncio.wait_for(run.done.wait(), 10)
    assert echoed not in (await Message.objects.aget(pk=ack["reply"])).error_message
    await socket.close()


def view_error() -> Exception:
    """An exception whose traceback holds only this frame (not the test's locals)."""
    try:
        raise RuntimeError("a view failed")
    except RuntimeError as error:
        return error


@pytest.mark.django_db
def test_sec07_error_page_and_error_mail_hide_the_settings_keys(settings):
    encryption_key = Fernet.generate_key().decode()
    settings.STREAMCHAT = {
        **settings.STREAMCHAT,
        "API_KEY": SECRET,
        "ENCRYPTION_KEYS": [encryption_key],
    }
    request = RequestFactory().get("/chat/")
    error = view_error()
    settings.DEBUG = True
    page = technical_500_response(request, type(error), error, error.__traceback__)
    mail_text = ExceptionReporter(request, type(error), error, error.__traceback__)
    mail_text = mail_text.get_traceback_text()
    html = page.content.decode()
    assert "STREAMCHAT" in html  # the settings are listed, with the secrets masked
    for text, where in ((html, "the debug error page"), (mail_text, "the error mail")):
        assert_no_secret(text, where)
        assert encryption_key not in text and encryption_key[:16] not in text
