"""What streamchat logs: connects, closes, refusals, reply ends and errors, at sensible levels with
the user id and reply id; never message contents, reply text, session cookies or API keys; and one
bad client cannot flood the log."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.contrib.sessions.models import Session
from django.utils import timezone

from streamchat import consumers
from streamchat.models import ChatModel, Conversation, Message, RateLimit
from streamchat.streaming.hub import get_hub
from tests import servers
from tests.live_ws import asession_cookie
from tests.live_ws import connect as live_connect
from tests.servers import ROOT, ServerProcess, free_port

pytestmark = [pytest.mark.django_db(transaction=True)]

SECRET_QUESTION = "my-private-question-7731 about the merger"


@pytest.fixture(autouse=True)
def _setup(simulator_settings, caplog):
    consumers.refusal_log._windows.clear()  # each test starts with a fresh allowance
    caplog.set_level(logging.DEBUG)
    for name in ("streamchat", "django", "openai", "httpx", "httpcore", "asyncio"):
        caplog.set_level(logging.DEBUG, logger=name)
    return simulator_settings


def ours(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("streamchat")]


def lines(caplog) -> str:
    return "\n".join(f"{r.levelname} {r.getMessage()}" for r in ours(caplog))


def find(caplog, level: int, *parts: str) -> logging.LogRecord:
    for record in ours(caplog):
        message = record.getMessage()
        if record.levelno == level and all(part in message for part in parts):
            return record
    raise AssertionError(f"no {logging.getLevelName(level)} line with {parts}:\n{lines(caplog)}")


def session_key(socket) -> str:
    """The session id in the socket's ``Cookie`` header."""
    cookie = dict(socket.communicator.scope["headers"])[b"cookie"].decode()
    return cookie.split("sessionid=", 1)[1].split(";")[0]


async def settle() -> None:
    for run in list(get_hub().runs.values()):
        await asyncio.wait_for(run.done.wait(), 10)


async def test_connect_reply_and_close_are_logged_with_ids_never_contents(
    user, chat_socket, simulator, caplog
):
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "log-1", "content": SECRET_QUESTION})
    ack = await socket.recv_until("ack")
    await socket.reply(ack["reply"])
    await settle()
    await socket.close()

    find(caplog, logging.INFO, "connected", f"user={user.pk}")
    find(caplog, logging.INFO, f"reply {ack['reply']} of user {user.pk} complete")
    find(caplog, logging.INFO, "closed", f"user={user.pk}")
    key = session_key(socket)
    for record in ours(caplog):  # streamchat's own lines, at every level
        text = record.getMessage() + (record.exc_text or "")
        assert "private-question" not in text and "merger" not in text
        assert "OpenRouter simulator" not in text  # the reply's text
        assert key not in text and "sessionid" not in text
        assert simulator.api_key not in text


async def test_refusals_are_logged_with_user_code_and_reply(user, chat_socket, caplog):
    await RateLimit.objects.acreate(scope="user", user=user, requests_per_minute=1)
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "a", "content": "first"})
    ack = await socket.recv_until("ack")
    await socket.reply(ack["reply"])
    await socket.send({"type": "send", "client_id": "b", "content": SECRET_QUESTION})
    await socket.recv_until("error")
    await socket.send({"type": "stop", "reply": 999_999})
    await socket.recv_until("error")
    await socket.communicator.send_input({"type": "websocket.receive", "text": "{not json"})
    await socket.recv_until("error")
    await socket.close()

    find(caplog, logging.INFO, "refused", f"user={user.pk}", "type=send", "code=rate_limited")
    find(caplog, logging.INFO, "refused", "type=stop", "code=not_found", "reply=999999")
    find(caplog, logging.INFO, "refused", "code=bad_json")
    assert "private-question" not in lines(caplog) and "{not json" not in lines(caplog)


async def test_upstream_errors_are_warnings_naming_the_reply(user, chat_socket, caplog):
    await ChatModel.objects.acreate(
        model_id="simulator/error-mid?after=3", enabled=True, is_default=True
    )
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "e", "content": SECRET_QUESTION})
    ack = await socket.recv_until("ack")
    _, finished = await socket.reply(ack["reply"])
    await settle()
    assert finished["status"] == "error"
    record = find(caplog, logging.WARNING, f"reply {ack['reply']} of user {user.pk} failed")
    assert "stream_error" in record.getMessage()
    assert "private-question" not in lines(caplog)
    await socket.close()


async def test_ended_sessions_and_reaped_replies_are_logged(user, chat_socket, caplog):
    conversation = await Conversation.objects.acreate(owner=user, title="x")
    orphan = await Message.objects.acreate(
        conversation=conversation,
        role="assistant",
        status="streaming",
        content=SECRET_QUESTION,
        lease_expires=timezone.now() - timedelta(seconds=5),
    )
    socket = await chat_socket(user)  # a socket starts this worker's reaper
    expected = f"reply {orphan.pk} of user {user.pk} interrupted"
    for _ in range(100):
        if expected in lines(caplog):
            break
        await asyncio.sleep(0.05)
    find(caplog, logging.WARNING, expected)

    await sync_to_async(Session.objects.filter(session_key=session_key(socket)).delete)()
    await socket.send({"type": "ping"})
    await socket.recv_until("error")
    find(caplog, logging.INFO, "session ended", f"user={user.pk}", "4401")
    assert "private-question" not in lines(caplog)


async def test_one_bad_client_cannot_flood_the_log(user, chat_socket, caplog):
    sockets = [await chat_socket(user) for _ in range(3)]
    for socket in sockets:
        for i in range(100):
            raw = ["{", "[]", '{"type": "nope"}', '{"type": "send"}'][i % 4]
            await socket.communicator.send_input({"type": "websocket.receive", "text": raw})
        for _ in range(100):
            assert (await socket.recv())["type"] == "error"  # every frame is still answered
    refusals = [r for r in ours(caplog) if "refused" in r.getMessage()]
    assert len(refusals) <= consumers.refusal_log.per_minute, len(refusals)
    assert len(ours(caplog)) < 30, lines(caplog)
    for socket in sockets:
        await socket.close()
    assert "Traceback" not in caplog.text


def test_the_refusal_allowance_reports_what_it_left_out(monkeypatch):
    log = consumers.RefusalLog(per_minute=2)
    now = [1000.0]
    monkeypatch.setattr(consumers.time, "monotonic", lambda: now[0])
    assert [log.admit(7) for _ in range(5)] == [0, 0, None, None, None]
    assert log.admit(8) == 0  # other users have their own allowance
    now[0] += 61
    assert log.admit(7) == 3  # the next window's first line says how many were left out


# -- each line once (issue 15) -------------------------------------------------------------------
# The demo's LOGGING as deployed: a Daphne process (whose command line configures the root logger
# before Django configures LOGGING), and a process that only runs django.setup() (manage.py
# commands, runserver). Each record is written exactly once, and streamchat's INFO lines are not
# lost when the root logger is at WARNING (Daphne -v 0).


class DemoDaphne(ServerProcess):
    """Daphne serving the demo with the test database and ``daphne_args`` (e.g. ``-v 0``)."""

    def __init__(self, *daphne_args: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",  # the demo's settings, LOGGING included
            "DATABASE_URL": servers.test_database_url(),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("REDIS_URL", None)
        env.pop("STREAMCHAT_LOG_LEVEL", None)
        command = [sys.executable, "-m", "daphne", *daphne_args, "-b", "127.0.0.1"]
        command += ["-p", str(self.port), "orchat_site.asgi:application"]
        self._start(command, cwd=ROOT, env=env, log=log)


@pytest.mark.parametrize("verbosity", [[], ["-v", "0"]], ids=["default", "v0"])
async def test_each_log_line_is_written_once_under_daphne(user, tmp_path, verbosity):
    with DemoDaphne(*verbosity, log=tmp_path / "daphne.log") as server:
        socket = await live_connect(server, await asession_cookie(user))
        await socket.send(json.dumps({"type": "launch"}))  # a refusal: an INFO line
        assert json.loads(await asyncio.wait_for(socket.recv(), 10))["code"] == "unknown_type"
        await socket.close()
        async with httpx.AsyncClient(base_url=server.url) as client:  # Django's WARNING
            assert (await client.get("/no-such-page-7731/")).status_code == 404
        lines_of = server.log_path.read_text(errors="replace").splitlines
        wanted = {
            f"websocket connected: user={user.pk}": 1,
            f"websocket frame refused: user={user.pk} type=- code=unknown_type": 1,
            f"websocket closed: user={user.pk}": 1,
            "Not Found: /no-such-page-7731/": 1,
        }
        for _ in range(200):  # the close is logged after the socket is gone
            counts = {text: sum(text in line for line in lines_of()) for text in wanted}
            if all(counts.values()):
                break
            await asyncio.sleep(0.05)
        assert counts == wanted, server.log()


SETUP_AND_LOG = """
import logging, django
django.setup()
logging.getLogger("streamchat.consumers").info("marker-info-5521")
logging.getLogger("streamchat").warning("marker-warning-5521")
logging.getLogger("django.request").warning("marker-django-5521")
logging.getLogger("some.library").info("marker-library-info-5521")
"""


@pytest.mark.once
@pytest.mark.parametrize("debug", ["true", "false"])
def test_each_log_line_is_written_once_without_a_server(debug):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "orchat_site.settings", "DEBUG": debug}
    env.pop("STREAMCHAT_LOG_LEVEL", None)
    done = subprocess.run(
        [sys.executable, "-c", SETUP_AND_LOG],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    output = done.stdout + done.stderr
    for marker in ("marker-info-5521", "marker-warning-5521", "marker-django-5521"):
        assert output.count(marker) == 1, output
    assert "marker-library-info-5521" not in output  # the root logger stays at WARNING
    assert "INFO     streamchat.consumers marker-info-5521" in output  # level and logger named
