"""Graceful drain: a worker that is told to stop (every deploy) loses nothing.

``drain()`` stops admitting (new sends get ``server_restarting``, new sockets close 4012), closes
idle sockets with 4012 so pages reconnect to another worker at once, lets running replies finish
for up to ``DRAIN_SECONDS``, then ends the rest ``interrupted``: their final write keeps all the
text any follower was sent, usage is settled with the best figures known, followers get
``reply.finished``, and the remaining sockets close 4012 (the page reconnects and resumes). No
row stays ``streaming``.

How it is triggered:

- **Daphne**: ``install_daphne_hooks()`` (called by the app config when Daphne's Twisted reactor is
  installed) starts the hub when the server starts — a restarted worker reaps its predecessor's
  replies before any socket connects — and runs the drain as a "before shutdown" trigger, which
  Twisted waits for on SIGTERM / SIGINT.
- **uvicorn and other servers with ASGI lifespan**: route the ``lifespan`` scope to
  ``Lifespan()`` (``ProtocolTypeRouter({"lifespan": Lifespan(), ...})``): startup starts the
  hub, shutdown drains.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

from ..conf import app_settings
from .hub import get_hub

logger = logging.getLogger("streamchat.streaming")

# 1012 ("service restart") is what this means, but Daphne's websocket library lets applications
# send only 1000 and 3000-4999: 4012 is its twin in the private range (docs/protocol.md).
CLOSE_RESTARTING = 4012
# After the last close frames, a moment for them to reach the clients before the server exits.
CLOSE_GRACE_SECONDS = 0.5
# How long the final writes of the replies a drain interrupts may take.
FINAL_WRITE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class DrainReport:
    finished: int  # replies that ended on their own during the drain
    interrupted: int  # replies the drain cut off (stored ``interrupted`` with their text)
    seconds: float


async def drain(timeout: float | None = None) -> DrainReport:
    """Stop admitting, let running replies finish (``DRAIN_SECONDS``), end the rest."""
    hub = get_hub()
    hub.draining = True
    started = time.monotonic()
    timeout = float(app_settings.DRAIN_SECONDS if timeout is None else timeout)
    runs = list(hub.runs.values())
    logger.warning(
        "streamchat: draining: %d replies running, %d sockets open", len(runs), len(hub.sockets)
    )
    deadline = started + timeout
    had_sockets = bool(hub.sockets)
    while True:
        await _close_idle_sockets(hub)
        running = [run for run in hub.runs.values() if not run.done.is_set()]
        left = deadline - time.monotonic()
        if not running or left <= 0:
            break
        await asyncio.wait(
            [asyncio.ensure_future(run.done.wait()) for run in running], timeout=min(left, 0.2)
        )
    cut = [run for run in hub.runs.values() if not run.done.is_set()]
    for run in cut:
        run.interrupt()
    if cut:
        await asyncio.wait(
            [asyncio.ensure_future(run.done.wait()) for run in cut], timeout=FINAL_WRITE_SECONDS
        )
    closed = bool(hub.sockets) or had_sockets
    for socket in list(hub.sockets):
        await _close(socket)
    if closed:  # let the close frames reach their clients before the server exits
        await asyncio.sleep(CLOSE_GRACE_SECONDS)
    report = DrainReport(
        finished=len(runs) - len(cut),
        interrupted=len(cut),
        seconds=round(time.monotonic() - started, 2),
    )
    logger.warning(
        "streamchat: drained in %.2f s: %d replies finished, %d interrupted",
        report.seconds,
        report.finished,
        report.interrupted,
    )
    return report


async def _close_idle_sockets(hub: Any) -> None:
    for socket in list(hub.sockets):
        if not socket.following:
            await _close(socket)


async def _close(socket: Any) -> None:
    get_hub().sockets.discard(socket)
    try:
        await socket.close(code=CLOSE_RESTARTING)
    except Exception:  # already gone
        logger.debug("streamchat: closing a socket during the drain failed")


def install_daphne_hooks() -> bool:
    """Under Daphne: start the hub with the server, drain before it shuts down. False when no
    Twisted asyncio reactor is installed (not Daphne)."""
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None or type(reactor).__name__ != "AsyncioSelectorReactor":
        return False
    from twisted.internet import defer

    # Daphne's own "before shutdown" trigger cancels every application instance at once; run
    # it after the drain instead, so sockets keep their consumers (frames answered, a send
    # being admitted launched) while replies finish.
    daphne_kill: list[Any] = []

    def start() -> None:
        daphne_kill.extend(_take_daphne_kill(reactor))
        asyncio.ensure_future(_start_hub())

    async def drain_then_kill() -> None:
        await _drain_logged()
        for kill in daphne_kill:
            result = kill()
            if isinstance(result, defer.Deferred):
                await result.asFuture(asyncio.get_running_loop())

    def stop() -> Any:
        return defer.Deferred.fromFuture(asyncio.ensure_future(drain_then_kill()))

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    return True


def _take_daphne_kill(reactor: Any) -> list[Any]:
    """Remove Daphne's ``kill_all_applications`` shutdown trigger; the calls that run it."""
    event = getattr(reactor, "_eventTriggers", {}).get("shutdown")
    if event is None:
        return []
    taken = []
    for trigger in list(event.before):
        function, args, kwargs = trigger
        if getattr(function, "__name__", "") == "kill_all_applications":
            event.before.remove(trigger)
            taken.append(lambda f=function, a=args, k=kwargs: f(*a, **k))
    return taken


async def _start_hub() -> None:
    try:
        await get_hub().ensure_started()
    except Exception:
        logger.exception("streamchat: the engine could not start (it tries again on first use)")


async def _drain_logged() -> None:
    try:
        await drain()
    except Exception:
        logger.exception("streamchat: the drain failed")


class Lifespan:
    """An ASGI app for the ``lifespan`` scope: startup starts the engine's hub (listener, reaper),
    shutdown drains. For servers that speak lifespan (uvicorn, hypercorn)."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await _start_hub()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await _drain_logged()
                await send({"type": "lifespan.shutdown.complete"})
                return
