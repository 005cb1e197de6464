"""The engine's own database threads: a reply's I/O never queues behind another's.

``channels.db.database_sync_to_async`` runs every call of the process on asgiref's one shared
thread, one after another: under load each reply's admission, checkpoints and final write wait
behind every other reply's (and every other ``database_sync_to_async`` call of the process).
The engine runs its ORM work here instead, on ``DATABASE_THREADS`` threads of its own. Each
thread keeps its connection open between calls (no connection set up per trip, whatever
``CONN_MAX_AGE`` says; a connection that broke is closed and opened again on the next call), and
never holds a transaction open between calls.

``close_connections()`` closes every thread's connection (tests call it before the test database
is dropped; a host may call it at shutdown).
"""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from django.db import DatabaseError, connections
from django.utils import translation

from ..conf import app_settings

P = ParamSpec("P")
T = TypeVar("T")

_STOP = object()


class DatabaseThreads:
    """A fixed set of threads, each with its own persistent database connection."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _ensure_threads(self) -> None:
        if len(self._threads) >= self.size:
            return
        with self._lock:
            while len(self._threads) < self.size:
                thread = threading.Thread(
                    target=self._work, name=f"streamchat-db-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def submit(self, function: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``function`` on one of the threads; the future resolves on the calling loop."""
        self._ensure_threads()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        # In the caller's language (a request's, from LocaleMiddleware), as sync_to_async would
        # carry it: a refusal made here speaks it. asgiref keeps it from other threads otherwise.
        language = translation.get_language()

        def call() -> T:
            with translation.override(language):
                return function()

        self._jobs.put((call, loop, future))
        return future

    def start(self) -> None:
        """Start the threads now (each opens its connection), not at the first reply: the first
        reply after a deploy does not wait for connection set-up."""
        self._ensure_threads()

    def _work(self) -> None:
        try:
            connections["default"].ensure_connection()
        except Exception:  # the database is away: the first call connects (or says why)
            pass
        while True:
            job = self._jobs.get()
            if job is _STOP:
                _close_all()
                return
            if isinstance(job, threading.Barrier):
                _close_all()
                job.wait()
                continue
            function, loop, future = job
            try:
                result = function()
            except BaseException as error:  # handed to the caller, whatever it is
                if isinstance(error, DatabaseError):
                    _close_broken()
                _settle(loop, future, error=error)
            else:
                _settle(loop, future, result=result)
            finally:
                _end_transaction()

    def close_connections(self, timeout: float = 10) -> None:
        """Close every thread's connection (the threads go on and reconnect when next used)."""
        threads = [t for t in self._threads if t.is_alive()]
        if not threads:
            return
        barrier = threading.Barrier(len(threads) + 1)
        for _ in threads:
            self._jobs.put(barrier)
        try:
            barrier.wait(timeout)
        except threading.BrokenBarrierError:
            pass


def _settle(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    *,
    result: Any = None,
    error: BaseException | None = None,
) -> None:
    def resolve() -> None:
        if future.done():  # the caller was cancelled meanwhile
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(resolve)
    except RuntimeError:  # the loop closed while we worked
        pass


def _end_transaction() -> None:
    # A call never leaves a transaction open for the next one on this thread.
    for connection in connections.all(initialized_only=True):
        if connection.in_atomic_block:
            connection.close()


def _close_broken() -> None:
    for connection in connections.all(initialized_only=True):
        if connection.connection is not None and not connection.is_usable():
            connection.close()


def _close_all() -> None:
    for connection in connections.all(initialized_only=True):
        connection.close()


_threads: DatabaseThreads | None = None
_threads_lock = threading.Lock()


def thread_count() -> int:
    """``DATABASE_THREADS``, or by default: one on SQLite (its writers take turns on one file
    lock, and a second writer only waits in SQLite's busy handler), four elsewhere."""
    configured = app_settings.DATABASE_THREADS
    if configured is not None:
        return max(1, int(configured))
    return 1 if connections["default"].vendor == "sqlite" else 4


def get_threads() -> DatabaseThreads:
    global _threads
    if _threads is None:
        with _threads_lock:
            if _threads is None:
                _threads = DatabaseThreads(thread_count())
    return _threads


async def run(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``function(*args, **kwargs)`` on an engine database thread, awaited without blocking."""
    call = functools.partial(function, *args, **kwargs) if args or kwargs else function
    return await get_threads().submit(call)


def close_connections() -> None:
    """Close the connections of the engine's database threads."""
    if _threads is not None:
        _threads.close_connections()
