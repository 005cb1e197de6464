"""Real server processes for tests: Daphne serving the demo's ASGI app on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_database_url() -> str:
    """The URL of the database the running test uses, for another process."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    user = settings.get("USER") or "postgres"
    host = settings.get("HOST") or "127.0.0.1"
    port = settings.get("PORT") or 5432
    return f"postgres://{user}@{host}:{port}/{settings['NAME']}"


class ServerProcess:
    """A server in its own process on ``self.port``, logging to ``self.log_path``: waits until it
    listens, shows its log, stops it. Subclasses start ``self.process``."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    _log: Any

    def _start(
        self,
        command: list[str],
        *,
        cwd: Path,
        env: dict[str, str],
        log: Path,
        new_session: bool = False,
    ) -> None:
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115  (closed in stop())
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
        self._wait_until_listening()

    def _wait_until_listening(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"the server did not listen within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class DaphneServer(ServerProcess):
    """``python -m daphne`` in its own process, with the test's database and the simulator
    upstream."""

    def __init__(
        self,
        *,
        simulator: Any = None,
        env: dict[str, str] | None = None,
        log: Path | None = None,
        port: int | None = None,
        args: list[str] | None = None,
        new_session: bool = False,
    ) -> None:
        """``port``: a given one (a restart behind a proxy), else a free one; ``args``: more
        Daphne options (``--proxy-headers``); ``new_session``: out of the caller's process group
        (a terminal's Ctrl-C reaches the caller alone, which stops the server in its turn)."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        environment = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": test_database_url(),
            "PYTHONUNBUFFERED": "1",
        }
        environment.pop("REDIS_URL", None)
        if simulator is not None:
            environment["STREAMCHAT_LIVE_BASE_URL"] = simulator.base_url
            environment["STREAMCHAT_LIVE_API_KEY"] = simulator.api_key
        environment.update(env or {})
        self._start(
            self.command(args or []),
            cwd=ROOT,
            env=environment,
            log=log or ROOT / "var" / f"daphne-{self.port}.log",
            new_session=new_session,
        )

    def command(self, args: list[str]) -> list[str]:
        command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port)]
        return [*command, *args, "orchat_site.asgi:application"]

    def __enter__(self) -> DaphneServer:
        return self


class UvicornServer(DaphneServer):
    """The same app under uvicorn, with ASGI lifespan (the demo routes it to streamchat's
    ``Lifespan``: the engine starts with the server and drains on SIGTERM)."""

    def command(self, args: list[str]) -> list[str]:
        command = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(self.port)]
        return [*command, "--lifespan", "on", *args, "orchat_site.asgi:application"]
