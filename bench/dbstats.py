"""Database statement and connection counters for the benchmark's streamchat server.

``install()`` (called from ``bench/settings.py``) connects a ``connection_created`` receiver that
counts every new database connection and adds an ``execute_wrapper`` to it (once per connection
object: Django reuses the wrapper object when it reconnects). The wrapper counts each statement by
verb and table (``statements``: SELECT, INSERT, UPDATE, DELETE; ``control``: the rest, such as
SQLite's BEGIN and savepoints; psycopg begins transactions outside the cursor), and the characters
of the parameters of writes (a rough "bytes written").
``snapshot()`` is what ``GET /bench/stats/`` answers.
"""

from __future__ import annotations

import os
import re
import threading
from collections import Counter
from typing import Any

_lock = threading.Lock()
_by_kind: Counter[str] = Counter()
_totals: Counter[str] = Counter()
_SHAPE = re.compile(
    r'^\s*(?:(SELECT)\b.*?\bFROM\s+"?(\w+)|(INSERT)\s+INTO\s+"?(\w+)|(UPDATE)\s+"?(\w+)'
    r'|(DELETE)\s+FROM\s+"?(\w+)|(\w+))',
    re.IGNORECASE | re.DOTALL,
)
_WRITES = {"INSERT", "UPDATE", "DELETE"}
_DATA = {"SELECT", *_WRITES}


def classify(sql: str) -> tuple[str, str]:
    """(verb, table) of a statement: ``("UPDATE", "streamchat_message")``, ``("SAVEPOINT", "")``."""
    match = _SHAPE.match(sql)
    if match is None:
        return "OTHER", ""
    groups = [g for g in match.groups() if g]
    verb = groups[0].upper()
    return verb, groups[1] if len(groups) > 1 else ""


def _param_chars(params: Any, many: bool) -> int:
    rows = params if many else [params]
    total = 0
    for row in rows or ():
        values = row.values() if isinstance(row, dict) else row or ()
        for value in values:
            if isinstance(value, str | bytes):
                total += len(value)
    return total


def _count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
    verb, table = classify(sql)
    written = _param_chars(params, many) if verb in _WRITES else 0
    with _lock:
        _totals["statements" if verb in _DATA else "control"] += 1
        _totals["written_chars"] += written
        _by_kind[f"{verb} {table}".strip()] += 1
    return execute(sql, params, many, context)


def _on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    with _lock:
        _totals["connections"] += 1
    if _count not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count)


def install() -> None:
    from django.db.backends.signals import connection_created

    connection_created.connect(_on_connection_created, dispatch_uid="bench-dbstats")


def snapshot() -> dict[str, Any]:
    with _lock:
        return {
            "pid": os.getpid(),
            "statements": _totals["statements"],
            "control": _totals["control"],
            "connections": _totals["connections"],
            "written_chars": _totals["written_chars"],
            "by_kind": dict(_by_kind),
        }
