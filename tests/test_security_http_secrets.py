"""SEC-07 through the HTTP entry points: a live Daphne with every logger at DEBUG, an OpenRouter
key stored encrypted in the database, and OpenRouter answering normally, 401, 402, 500 or with an
error in mid-stream. Through Server-Sent Events and the OpenAI-compatible API (streamed and not),
the key (or any 12-character piece of its secret part) is in no response (headers, events, error
bodies), no line of the server's log and no stored row; neither are the personal token nor the
session cookie. An API key that upstream echoes in an error message is masked on the way out.
(The websocket side, the error page and the error mail are tests/test_security_secrets.py.)"""

from __future__ import annotations

import asyncio
import email
import json
import os
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async

from streamchat.crypto import encrypt
from streamchat.keys import key_hint
from streamchat.models import ApiKey, ChatModel, Message, Reservation, Usage
from tests.http_helpers import asession_for, personal_token
from tests.live_ws import wait_for
from tests.servers import ROOT, DaphneServer

# The websocket case's key, its 12-character pieces and its database dump: one definition.
from tests.test_security_secrets import SECRET, assert_no_piece_of, assert_no_secret, dump_database

pytestmark = [pytest.mark.django_db(transaction=True)]

SERVER_SETTINGS = {"MAX_RETRIES": 1, "BACKOFF_BASE": 0.01}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        # Django's error mail (a 5xx answer is one), with the HTML error page attached.
        "mail": {"class": "django.utils.log.AdminEmailHandler", "include_html": True},
    },
    "root": {"handlers": ["console"], "level": "DEBUG"},  # every logger, the app's and libraries'
    "loggers": {"django.request": {"handlers": ["mail"], "level": "ERROR"}},
}
SCENARIOS = {
    "ok": ("openai/gpt-4o-mini", None),
    "401": ("openai/gpt-4o-mini", "invalid_key"),
    "402": ("openai/gpt-4o-mini", "out_of_credits"),
    "500": ("simulator/server-error?status=500", "upstream_unavailable"),
    "mid-stream": ("simulator/error-mid?after=3", "stream_error"),
}
PATHS = ["sse", "openai-stream", "openai"]


@pytest.fixture(scope="module")
def debug_server(
    django_db_setup: None, django_db_blocker: Any, _simulator_server: Any, tmp_path_factory: Any
) -> Any:
    """One Daphne for the module, logging everything at DEBUG to its log file, with no API_KEY
    setting: the key is the encrypted row each test stores."""
    folder = tmp_path_factory.mktemp("settings")
    mail = folder / "mail"
    (folder / "debug_http_settings.py").write_text(
        "from tests.http_settings import *  # noqa: F403\n"
        f"STREAMCHAT = {{**STREAMCHAT, **{SERVER_SETTINGS!r}}}  # noqa: F405\n"
        f"LOGGING = {LOGGING!r}\n"
        "ADMINS = [('Admin', 'admin@example.com')]\n"
        "EMAIL_BACKEND = 'django.core.mail.backends.filebased.EmailBackend'\n"
        f"EMAIL_FILE_PATH = {str(mail)!r}\n"
    )
    path = os.pathsep.join(p for p in (str(folder), str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {
        "DJANGO_SETTINGS_MODULE": "debug_http_settings",
        "PYTHONPATH": path,
        "STREAMCHAT_LIVE_API_KEY": "",  # no key in the settings
    }
    with django_db_blocker.unblock():
        server = DaphneServer(simulator=_simulator_server, env=env)
    server.mail = mail  # the error mails it sends, one file per batch
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def upstream(simulator: Any) -> Any:
    ApiKey.objects.create(
        label="main", secret_encrypted=encrypt(SECRET), hint=key_hint(SECRET), priority=1
    )
    simulator.add_key(SECRET)
    return simulator


def seen(response: httpx.Response, body: str) -> str:
    """Everything a client got: status line, headers and body."""
    headers = "\n".join(f"{name}: {value}" for name, value in response.headers.items())
    return f"{response.status_code}\n{headers}\n\n{body}"


def error_of(path: str, status: int, body: str) -> dict[str, Any] | None:
    """The error a client of ``path`` was given (``code``, ``message``), or None for a reply that
    succeeded."""
    if path == "sse":
        frames = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
        return next(f for f in frames if f["type"] == "reply.finished")["error"]
    if status != 200:
        return json.loads(body)["error"]
    if path == "openai-stream":
        for line in body.splitlines():
            if line.startswith("data: {") and '"error"' in line:
                return json.loads(line[6:])["error"]
    return None


async def ask(
    server: DaphneServer, user: Any, path: str, model: str
) -> tuple[str, dict[str, Any] | None, list[str]]:
    """One message through ``path``: everything the client saw, the error it was given, and
    the other secrets it used (the personal token and the session cookie, to look for them too)."""
    session = await asession_for(user)
    token = await sync_to_async(personal_token)(user)
    cookie = "; ".join(f"{name}={value}" for name, value in session.cookies.items())
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
        if path == "sse":
            response = await client.post(
                "/chat/api/stream/",
                json={"client_id": "sec07", "content": "Hello", "model": model},
                headers={**session.headers, "Cookie": cookie},
            )
        else:
            response = await client.post(
                "/chat/v1/chat/completions",
                json={
                    "model": model,
                    "messages": [{"role": "user", "content": "Hello"}],
                    "stream": path == "openai-stream",
                },
                headers={"Authorization": f"Bearer {token}"},
            )
    body = response.text
    error = error_of(path, response.status_code, body)
    return seen(response, body), error, [token, session.cookies["sessionid"]]


def read_mails(path: Any) -> list[str]:
    """The decoded text of every part of every message in a file of the file-based mail backend
    (quoted-printable or base64 could otherwise split a secret across lines)."""
    texts = []
    for raw in path.read_text().split("\n" + "-" * 79 + "\n"):
        if not raw.strip():
            continue
        for part in email.message_from_string(raw).walk():
            payload = part.get_payload(decode=True)
            if payload:
                texts.append(payload.decode(part.get_content_charset() or "utf-8", "replace"))
    return texts


async def ended() -> None:
    """Every run ended and its bookkeeping landed (usage row, limits, the key's last use)."""
    await wait_for(
        lambda: (
            Usage.objects.exists()
            and not Message.objects.filter(status="streaming").exists()
            and not Reservation.objects.filter(state="open").exists()
        )
    )
    await asyncio.sleep(0.1)  # the key's last-used / last-error updates run off the reply's path


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_sec07_http_the_key_is_in_no_response_log_line_or_row(
    debug_server, upstream, user, scenario, path
):
    model, expected = SCENARIOS[scenario]
    if scenario == "401":
        upstream.revoke_key(SECRET)
    elif scenario == "402":
        upstream.add_key(SECRET, credits=0)
    await ChatModel.objects.acreate(model_id=model, enabled=True, is_default=True)
    start = debug_server.log_path.stat().st_size
    mailed = set(debug_server.mail.glob("*")) if debug_server.mail.exists() else set()
    answer, error, others = await ask(debug_server, user, path, model)
    await ended()
    assert (error or {}).get("code") == expected, answer[:2000]
    assert upstream.chat_requests[-1].headers["Authorization"] == f"Bearer {SECRET}"
    assert_no_secret(answer, f"the {path} response")

    if path == "sse":  # what the JSON API shows of the stored reply afterwards
        session = await asession_for(user)
        conversation = (await Message.objects.select_related("conversation").afirst()).conversation
        async with httpx.AsyncClient(base_url=debug_server.url, cookies=session.cookies) as c:
            page = await c.get(f"/chat/api/conversations/{conversation.pk}/")
        assert page.status_code == 200
        assert_no_secret(page.text, "the conversation's JSON")
    log = debug_server.log_path.read_bytes()[start:].decode(errors="replace")
    assert "DEBUG httpcore" in log or "DEBUG httpx" in log  # the libraries log at DEBUG
    assert_no_secret(log, "the server's log")
    for other in others:
        assert other not in log, "a personal token or session cookie is in the server's log"
    assert_no_secret(await sync_to_async(dump_database)(), "the database")
    mails = [text for f in set(debug_server.mail.glob("*")) - mailed for text in read_mails(f)]
    if answer.startswith("5"):  # the API answered 5xx (upstream failed before any text)
        assert mails, "a 5xx answer sends Django's error mail"
    for text in mails:
        assert_no_secret(text, "the error mail")
        for other in others:
            assert other not in text, "a personal token or session cookie is in the error mail"


@pytest.mark.parametrize("path", ["sse", "openai-stream"])
async def test_sec07_http_a_key_echoed_by_upstream_is_masked(debug_server, upstream, user, path):
    echoed = "sk-or-v1-0123456789abcdef0123456789abcdef"
    model = f"simulator/error-mid?after=2&message=Bad+key+{echoed}+rejected"
    await ChatModel.objects.acreate(model_id=model, enabled=True, is_default=True)
    start = debug_server.log_path.stat().st_size
    _, error, _ = await ask(debug_server, user, path, model)
    await ended()
    # (The model id names the key too: only what came back from upstream is looked at.)
    assert error is not None and error["code"] == "stream_error"
    assert "Bad key sk-or-" in error["message"] and "… rejected" in error["message"]
    assert_no_piece_of(echoed, error["message"])
    log = debug_server.log_path.read_bytes()[start:].decode(errors="replace")
    assert not [line for line in log.splitlines() if "Bad key" in line and echoed in line]
    stored = [m.error_message async for m in Message.objects.all()]
    stored += [u.error_code async for u in Usage.objects.all()]
    assert not [text for text in stored if echoed in text]
