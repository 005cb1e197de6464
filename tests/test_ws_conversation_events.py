"""Conversation events for other tabs: a rename through the JSON API reaches every subscribed
socket as ``conversation.updated`` (docs/protocol.md), and no other user's."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.urls import reverse

from streamchat.models import Conversation

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_a_rename_reaches_the_conversations_other_tabs(
    user_factory: Any, chat_socket: Any
) -> None:
    owner = await sync_to_async(user_factory)()
    stranger = await sync_to_async(user_factory)()
    conversation = await Conversation.objects.acreate(owner=owner, title="Old title")
    tab = await chat_socket(owner)
    other = await chat_socket(stranger)
    await tab.send({"type": "subscribe", "conversation": conversation.pk})
    await tab.send({"type": "ping"})
    await tab.recv_until("pong")  # subscribed

    client = Client(enforce_csrf_checks=False)
    await sync_to_async(client.force_login)(owner)
    response = await sync_to_async(client.patch)(
        reverse("streamchat:api-conversation", args=[conversation.pk]),
        data=json.dumps({"title": "  New   title "}),
        content_type="application/json",
    )
    assert response.status_code == 200

    updated = await tab.recv_until("conversation.updated")
    assert updated == {
        "type": "conversation.updated",
        "conversation": conversation.pk,
        "title": "New title",
    }
    await other.send({"type": "ping"})
    assert (await other.recv())["type"] == "pong"  # nothing for another user
