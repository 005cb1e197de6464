"""``make run``: the demo site, set up and served, with nothing left behind when it stops.

    python -m orchat_site.run [--host 127.0.0.1] [--port 8000] [--sim-port 8765]

Without ``OPENROUTER_API_KEY`` the local OpenRouter simulator starts first and the site is
pointed at it (``OPENROUTER_BASE_URL``, a demo key), so that ``migrate`` stores that key as the
site's API key (admin's Verify works) and ``demo_setup`` enables every simulator model under its
name. Then Daphne serves the site.

Every child runs in this process's group and is stopped when it ends, however it ends: Ctrl-C,
SIGTERM or SIGHUP to this process or to its whole group, a child that exits, an error. On Linux
the children are also told to stop if this process is killed outright (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIMULATOR_KEY = "sk-or-v1-simulator-demo-key"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GRACE_SECONDS = 10.0  # Daphne drains streaming replies on SIGTERM (docs/deploy.md)


class Stop(Exception):
    """A stop signal arrived."""


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the launcher dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Children:
    """The processes this launcher started, stopped together."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, argv: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        process = subprocess.Popen(list(argv), cwd=ROOT, env=env, preexec_fn=preexec)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        running = [p for p in self.processes if p.poll() is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Turn SIGINT, SIGTERM and SIGHUP into ``Stop`` (a group signal reaches the children too;
    they stop on their own and are waited for)."""

    def handler(signum: int, frame: object) -> None:
        raise Stop(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the process serving port {port} exited ({process.returncode})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port} after {timeout:.0f} s")


def manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--sim-port", type=int, default=8765)
    options = parser.parse_args(argv)
    if sys.platform.startswith("linux"):
        _die_with_parent()  # make (or the shell) killed outright: stop too, and so the children
    env = dict(os.environ)
    children = Children()
    try:
        with stop_signals():
            simulated = not env.get("OPENROUTER_API_KEY")
            if simulated:
                print(
                    "OPENROUTER_API_KEY is not set: replies come from the local OpenRouter "
                    f"simulator on port {options.sim_port}.",
                    flush=True,
                )
                simulator = children.start(
                    [
                        sys.executable,
                        "manage.py",
                        "openrouter_simulator",
                        "--port",
                        str(options.sim_port),
                    ],
                    env,
                )
                wait_for_port(options.sim_port, simulator)
                env.update(
                    OPENROUTER_BASE_URL=f"http://127.0.0.1:{options.sim_port}/api/v1",
                    OPENROUTER_API_KEY=SIMULATOR_KEY,
                    STREAMCHAT_SIMULATOR="1",
                )
            # After the key is in the environment: the first migrate stores it as an API key.
            manage("migrate", "--noinput", env=env)
            print("Demo logins:", flush=True)
            manage("demo_setup", *(["--simulator-models"] if simulated else []), env=env)
            print(f"Serving on http://{options.host}:{options.port}/chat/", flush=True)
            children.start(
                [
                    sys.executable,
                    "-m",
                    "daphne",
                    "-b",
                    options.host,
                    "-p",
                    str(options.port),
                    "orchat_site.asgi:application",
                ],
                env,
            )
            while True:
                for process in children.processes:
                    if process.poll() is not None:
                        print(f"{' '.join(process.args[1:4])} exited ({process.returncode}).")
                        return process.returncode or 1
                time.sleep(0.2)
    except Stop as stop:
        print(f"\n{stop}: stopping.", flush=True)
        return 0
    except subprocess.CalledProcessError as error:
        return error.returncode or 1
    finally:
        # A second Ctrl-C while the children drain must not leave them behind.
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        children.stop()


if __name__ == "__main__":
    sys.exit(main())
