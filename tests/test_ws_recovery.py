"""Replies whose worker died: marked interrupted with their saved text, at start-up and on
demand."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from streamchat.models import Message, Usage

pytestmark = pytest.mark.django_db


@pytest.fixture
def orphan(conversation_factory):
    conversation = conversation_factory(title="Orphan")
    question = Message.objects.create(conversation=conversation, role="user", content="Q")
    return Message.objects.create(
        conversation=conversation,
        role="assistant",
        parent=question,
        status="streaming",
        content="Saved up to the last checkpoint",
        model="openai/gpt-4o-mini",
        lease_expires=timezone.now() - timedelta(seconds=1),
    )


def test_reap_command_marks_lapsed_replies_interrupted(orphan, capsys):
    live = Message.objects.create(
        conversation=orphan.conversation,
        role="assistant",
        parent=orphan.parent,
        status="streaming",
        lease_expires=timezone.now() + timedelta(seconds=30),
    )
    call_command("streamchat_reap")
    assert "1 replies interrupted" in capsys.readouterr().out
    orphan.refresh_from_db()
    live.refresh_from_db()
    assert orphan.status == "interrupted" and orphan.content == "Saved up to the last checkpoint"
    assert orphan.error_message == "The reply was interrupted." and orphan.completed is not None
    assert live.status == "streaming"  # another worker still renews it
    usage = Usage.objects.get(message=orphan)
    assert usage.outcome == "interrupted" and usage.completion_tokens > 0
    call_command("streamchat_reap")
    assert Usage.objects.filter(message=orphan).count() == 1  # settled once


@pytest.mark.django_db(transaction=True)
async def test_a_worker_reaps_on_start(orphan, user, chat_socket, simulator_settings):
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "wake", "content": "hi"})
    await socket.recv_until("ack")
    # The engine starts its reaper with the first reply of the process.
    import asyncio

    for _ in range(100):
        await orphan.arefresh_from_db()
        if orphan.status == "interrupted":
            break
        await asyncio.sleep(0.05)
    assert orphan.status == "interrupted"
    await socket.close()
