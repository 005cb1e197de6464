"""Child processes of the benchmark: pinned, with a raised file limit, each in its own process
group, logged to a file, and all stopped on exit, Ctrl-C or SIGTERM; and what /proc says of them."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

_children: list[subprocess.Popen[Any]] = []
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cores() -> tuple[int | None, int | None]:
    """(server core, client core) when this process may pin to two cores, else (None, None)."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, None
    if len(allowed) < 2:
        return None, None
    return allowed[0], allowed[1]


def raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass


def pin(core: int | None, pid: int = 0) -> bool:
    if core is None:
        return False
    try:
        os.sched_setaffinity(pid, {core})
        return True
    except OSError:
        return False


def start(
    command: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    log: Path,
    core: int | None,
    pipes: bool = False,
) -> subprocess.Popen[Any]:
    """Start ``command`` in a new session (its own process group) pinned to ``core``."""

    def prepare() -> None:
        pin(core)
        raise_file_limit()

    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else out,
            stderr=out,
            start_new_session=True,
            preexec_fn=prepare,
            text=pipes or None,
        )
    _children.append(process)
    return process


def stop(process: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGTERM to the process group, then SIGKILL if it does not end."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(5)
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()
    if process in _children:
        _children.remove(process)


def stop_all() -> None:
    for process in list(reversed(_children)):
        try:
            stop(process, timeout=5)
        except Exception:  # cleanup goes on with the others
            pass


def install_signal_handlers() -> None:
    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started ignoring it


def wait_listening(
    process: subprocess.Popen[Any], port: int, log: Path, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{log.name}: exited with {process.returncode}:\n{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{log.name}: not listening after {timeout} s:\n{tail(log)}")


def tail(log: Path, chars: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


# -- /proc -------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the whole process (all threads, also ended ones), from /proc/PID/stat
    (clock ticks), refined with the threads' schedstat run time (ns) when that is readable."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = (int(fields[11]) + int(fields[12])) / CLK_TCK
    try:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        precise = total / 1e9
    except (OSError, ValueError, IndexError):
        return ticks
    # Ended threads leave no schedstat: trust the ticks when they are clearly higher.
    return precise if precise >= ticks - 0.05 else ticks


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class RssSampler:
    """Samples VmRSS of ``pid`` every ``interval`` s in a thread; ``stop()`` returns the peak."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = rss_kb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.peak = max(self.peak, rss_kb(self.pid))
            except OSError:
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        try:
            self.peak = max(self.peak, rss_kb(self.pid))
        except OSError:
            pass
        return self.peak


def wait_idle(pid: int, *, window: float = 0.1, busy: float = 0.15, limit: float = 3.0) -> None:
    """Wait until the process uses under ``busy`` of a core over ``window`` (trailing writes
    after the last frame), at most ``limit`` seconds."""
    deadline = time.monotonic() + limit
    before = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = cpu_seconds(pid)
        if now - before < busy * window:
            return
        before = now
