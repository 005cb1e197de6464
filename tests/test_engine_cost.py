"""The engine's fixed cost per reply (issue 14), asserted as counts and order, never as times.

- the database work of a reply does not grow with its length (no write per token);
- a checkpoint appends only the text added since the last one;
- the engine's database threads keep their connections (none opened per trip);
- beyond ``MAX_ACTIVE_REPLIES`` a send is refused ``overloaded`` with a retry hint, and the replies
  already running finish.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext

from streamchat.models import Conversation, Message
from streamchat.streaming import db
from streamchat.streaming.hub import get_hub
from streamchat.streaming.store import StoredReply
from tests.db_statements import StatementLog

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _upstream(simulator_settings: Any, settings: Any) -> Any:
    # Checkpoints far apart: a reply's own statements are what is counted.
    settings.STREAMCHAT = {**settings.STREAMCHAT, "CHECKPOINT_MS": 60_000}
    return simulator_settings


async def one_reply(socket: Any, client_id: str) -> tuple[str, dict[str, Any]]:
    await socket.send(
        {"type": "send", "client_id": client_id, "content": "Hello", "conversation": None}
    )
    ack = await socket.recv_until("ack")
    text, finished = await socket.reply(ack["reply"])
    for run in list(get_hub().runs.values()):
        await asyncio.wait_for(run.done.wait(), 10)
    return text, finished


async def test_st15_a_replys_statements_do_not_grow_with_its_length(
    user_factory: Any, chat_socket: Any, simulator: Any, statements: StatementLog
) -> None:
    socket = await chat_socket(await sync_to_async(user_factory)())
    simulator.next_reply("Warm-up: the reaper's first round and the login are not counted.")
    await one_reply(socket, "warm-up")
    statements.statements.clear()
    simulator.next_reply("Short.")
    await one_reply(socket, "short")
    short = len(statements.statements)
    statements.statements.clear()
    simulator.next_reply(" ".join(f"word{n}" for n in range(300)))
    text, finished = await one_reply(socket, "long")
    assert finished["status"] == "complete" and len(text) > 1000
    assert len(statements.statements) == short  # not one more for 300 more tokens


def test_a_checkpoint_appends_only_the_new_text(conversation_factory: Any) -> None:
    conversation = conversation_factory()
    row = Message.objects.create(
        conversation=conversation, role="assistant", status="streaming", content=""
    )
    record = StoredReply(row.pk, conversation.pk, None)
    first = "a" * 5000
    record.checkpoint(first, "")
    with CaptureQueriesContext(connection) as queries:
        record.checkpoint("tail", "thinking")
    (update,) = queries.captured_queries
    assert first not in update["sql"]  # the saved text is not sent again
    row.refresh_from_db()
    assert (row.content, row.reasoning) == (first + "tail", "thinking")


def test_a_checkpoint_after_the_end_changes_nothing(conversation_factory: Any) -> None:
    conversation = conversation_factory()
    row = Message.objects.create(
        conversation=conversation, role="assistant", status="complete", content="Final."
    )
    StoredReply(row.pk, conversation.pk, None).checkpoint(" late", "")
    row.refresh_from_db()
    assert row.content == "Final."


async def test_beyond_max_active_replies_sends_are_overloaded(
    user_factory: Any, chat_socket: Any, simulator: Any, settings: Any
) -> None:
    settings.STREAMCHAT = {**settings.STREAMCHAT, "MAX_ACTIVE_REPLIES": 1}
    simulator.config.token_delay = 0.02
    first = await chat_socket(await sync_to_async(user_factory)())
    second = await chat_socket(await sync_to_async(user_factory)())
    simulator.next_reply(" ".join(f"w{n}" for n in range(40)))
    await first.send({"type": "send", "client_id": "a", "content": "Hi", "conversation": None})
    ack = await first.recv_until("ack")
    started = await first.recv_until("delta")  # it runs

    await second.send({"type": "send", "client_id": "b", "content": "Hi", "conversation": None})
    refused = await second.recv_until("error")
    assert refused["code"] == "overloaded" and refused["retry_after"] > 0
    assert refused["client_id"] == "b"

    text, finished = await first.reply(ack["reply"], known=started["text"])
    assert finished["status"] == "complete"
    # Nothing was stored for the refused send; the accepted one is whole.
    assert await Conversation.objects.acount() == 1
    for run in list(get_hub().runs.values()):
        await asyncio.wait_for(run.done.wait(), 10)

    # Capacity frees with the reply: the next send goes through.
    simulator.next_reply("Now there is room.")
    text, finished = await one_reply(second, "c")
    assert (text, finished["status"]) == ("Now there is room.", "complete")


async def test_the_engine_threads_keep_their_connections(
    user_factory: Any, chat_socket: Any, simulator: Any, statements: StatementLog
) -> None:
    socket = await chat_socket(await sync_to_async(user_factory)())
    simulator.next_reply("Warm-up.")
    await one_reply(socket, "warm-up")
    statements.connections = 0
    replies = 2 * db.get_threads().size
    for n in range(replies):
        simulator.next_reply(f"Reply {n}.")
        await one_reply(socket, f"r{n}")
    # Each reply makes at least two trips (its plan, its end): a connection per trip would open
    # four times as many as there are threads.
    assert statements.connections <= db.get_threads().size


async def test_exactly_max_active_replies_run_at_once(
    user_factory: Any, chat_socket: Any, simulator: Any, settings: Any
) -> None:
    """Sends that arrive together are counted once each (being admitted, then running): with
    a cap of 3, three of four concurrent sends run and one is refused."""
    settings.STREAMCHAT = {**settings.STREAMCHAT, "MAX_ACTIVE_REPLIES": 3}
    simulator.config.token_delay = 0.02
    sockets = [await chat_socket(await sync_to_async(user_factory)()) for _ in range(4)]
    for n, socket in enumerate(sockets):
        simulator.next_reply(" ".join(f"w{k}" for k in range(20)))
        await socket.send(
            {"type": "send", "client_id": f"s{n}", "content": "Hi", "conversation": None}
        )
    answers = [await socket.recv_until_any("ack", "error") for socket in sockets]
    assert sorted(a["type"] for a in answers) == ["ack", "ack", "ack", "error"]
    assert [a["code"] for a in answers if a["type"] == "error"] == ["overloaded"]
    for run in list(get_hub().runs.values()):
        await asyncio.wait_for(run.done.wait(), 10)
