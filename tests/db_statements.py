"""Counting database work from outside: every statement (and connection) on every connection
opened from now on, on any thread — the engine's database threads and asgiref's. Connections
already open are closed first, so the engine's threads reconnect with the wrapper."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from django.db.backends.signals import connection_created

from streamchat.streaming import db

# The worker's reaper sweeps the database on its own schedule, whatever a test does.
BACKGROUND = frozenset({"reap_interrupted", "reap_expired", "finished_frames"})


class StatementLog:
    def __init__(self) -> None:
        self.statements: list[str] = []
        self.connections = 0

    def wrapper(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_name not in BACKGROUND:
            frame = frame.f_back  # type: ignore[assignment]
        if frame is None:  # not the reaper's
            self.statements.append(sql)
        return execute(sql, params, many, context)

    def on_connect(self, sender: Any, connection: Any, **kwargs: Any) -> None:
        self.connections += 1
        connection.execute_wrappers.append(self.wrapper)


@pytest.fixture
def statements() -> Iterator[StatementLog]:
    log = StatementLog()
    db.close_connections()
    connection_created.connect(log.on_connect)
    try:
        yield log
    finally:
        connection_created.disconnect(log.on_connect)
        db.close_connections()
