"""``make run``'s first ten minutes (orchat_site/run.py), as a new user meets them: a fresh SQLite
file, no OpenRouter key. The simulator's models are in the chat's picker by name, its demo key is
stored so admin's Verify works, a demo login lands on the chat — and every process it started
ends however it is stopped (a group signal, a signal to it alone, a SIGKILL)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port
from tests.services import reachable

pytestmark = [pytest.mark.once]

ROOT = Path(__file__).resolve().parent.parent


class Launch:
    """``python -m orchat_site.run`` in its own process group, on free ports and a new database."""

    def __init__(self, tmp_path: Path, database: Path) -> None:
        self.port, self.sim_port = free_port(), free_port()
        unset = ("OPENROUTER_", "STREAMCHAT_", "DJANGO_", "DATABASE_URL")
        env = {key: value for key, value in os.environ.items() if not key.startswith(unset)}
        env.update(DATABASE_URL=f"sqlite:///{database}", PYTHONUNBUFFERED="1")
        self.log = (tmp_path / "run.log").open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orchat_site.run",
                "--port",
                str(self.port),
                "--sim-port",
                str(self.sim_port),
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = tmp_path / "run.log"
        deadline = time.monotonic() + 90
        while not reachable("127.0.0.1", self.port, 0.2):
            assert self.process.poll() is None, self.output.read_text()
            assert time.monotonic() < deadline, self.output.read_text()
            time.sleep(0.2)
        self.children = descendants(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        for pid in self.children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()
        self.log.close()


def descendants(pid: int) -> list[int]:
    """The processes under ``pid`` (Linux /proc)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        children_file = Path(f"/proc/{parent}/task/{parent}/children")
        try:
            children = [int(c) for c in children_file.read_text().split()]
        except OSError:
            continue
        found += children
        pending += children
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its parent's wait is missing


def all_ended(pids: list[int], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(pid) for pid in pids):
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One demo database for the module: the first launch migrates it, the others find it so
    (as a user's second ``make run`` does)."""
    return tmp_path_factory.mktemp("demo") / "demo.sqlite3"


@pytest.fixture
def launch(tmp_path: Path, database: Path) -> Iterator[Launch]:
    if not sys.platform.startswith("linux"):
        pytest.skip("process checks read /proc")
    run = Launch(tmp_path, database)
    try:
        yield run
    finally:
        run.stop()


def login(client: httpx.Client, username: str, password: str) -> httpx.Response:
    page = client.get("/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token, page.text
    return client.post(
        "/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token[1]},
        headers={"Referer": f"{client.base_url}/login/"},
    )


def test_a_new_user_gets_every_simulator_model_the_demo_key_and_lands_on_the_chat_then_stops(
    launch: Launch,
) -> None:
    with httpx.Client(base_url=launch.url, timeout=20) as client:
        answer = login(client, "demo", "demo-pass-1234")
        assert answer.status_code == 302 and answer.headers["location"] == "/chat/"
        models = client.get("/chat/api/models/").json()["models"]
        names = {m["id"]: m["name"] for m in models}
        assert {"openai/gpt-4o-mini", "simulator/echo", "deepseek/deepseek-r1"} <= names.keys()
        assert names["simulator/echo"] == "Simulator: echo"  # by name, not the raw id
        assert [m["id"] for m in models if m["default"]] == ["openai/gpt-4o-mini"]

    with httpx.Client(base_url=launch.url, timeout=20) as admin:
        login(admin, "admin", "admin-pass-1234")
        keys = admin.get("/admin/streamchat/apikey/")
        assert "From OPENROUTER_API_KEY" in keys.text
        key_id = re.search(r'name="_selected_action" value="(\d+)"', keys.text)
        assert key_id, keys.text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', keys.text)
        assert token
        verified = admin.post(
            "/admin/streamchat/apikey/",
            data={
                "action": "verify",
                "_selected_action": key_id[1],
                "csrfmiddlewaretoken": token[1],
            },
            headers={"Referer": f"{launch.url}/admin/streamchat/apikey/"},
            follow_redirects=True,
        )
        assert "messagelist" in verified.text and "cannot be decrypted" not in verified.text
        assert 'class="success"' in verified.text, verified.text

    # Ctrl-C in a terminal, or a supervisor stopping the job: the whole group gets the signal.
    pids = launch.children
    os.killpg(launch.process.pid, signal.SIGTERM)
    assert all_ended([launch.process.pid, *pids]), launch.output.read_text()


@pytest.mark.parametrize("how", ["SIGHUP to the launcher", "SIGKILL"])
def test_every_child_process_ends_however_make_run_is_stopped(launch: Launch, how: str) -> None:
    pids = launch.children
    assert len(pids) >= 2, f"simulator and Daphne expected, found {pids}"
    if how == "SIGKILL":
        launch.process.kill()  # the launcher alone: its children are told by the kernel
    else:
        launch.process.send_signal(signal.SIGHUP)  # SIGINT and SIGTERM take the same path
    assert all_ended([launch.process.pid, *pids]), launch.output.read_text()
