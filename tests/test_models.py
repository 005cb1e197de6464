"""The data model's rules: one default model, the ledger outlives the chat, limit scopes."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction

from streamchat.models import ChatModel, Message, RateLimit, Usage

pytestmark = pytest.mark.django_db


def test_choosing_a_default_model_demotes_the_previous_one():
    a = ChatModel.objects.create(model_id="openai/a", enabled=True, is_default=True)
    b = ChatModel.objects.create(model_id="openai/b", enabled=True, is_default=True)
    a.refresh_from_db()
    assert not a.is_default and b.is_default
    assert ChatModel.objects.filter(is_default=True).count() == 1


def test_the_database_refuses_two_defaults_written_around_save():
    ChatModel.objects.create(model_id="openai/a", is_default=True)
    ChatModel.objects.create(model_id="openai/b")
    with pytest.raises(IntegrityError), transaction.atomic():
        ChatModel.objects.filter(model_id="openai/b").update(is_default=True)


def test_cost_from_the_price_table():
    model = ChatModel(
        model_id="x/y", prompt_price=Decimal("0.15"), completion_price=Decimal("0.60")
    )
    assert model.cost_for(1_000_000, 500_000) == Decimal("0.45")
    assert ChatModel(model_id="x/z").cost_for(10, 10) is None


def test_deleting_a_conversation_keeps_its_usage(conversation_factory):
    conversation = conversation_factory(title="Budget talk")
    reply = Message.objects.create(conversation=conversation, role="assistant", content="hi")
    Usage.objects.create(
        user=conversation.owner,
        message=reply,
        outcome="complete",
        cost=Decimal("0.25"),
        prompt_tokens=5,
    )
    conversation.delete()
    row = Usage.objects.get()
    assert row.message is None and row.user == conversation.owner and row.cost == Decimal("0.25")


def test_regenerated_replies_are_siblings(conversation_factory):
    conversation = conversation_factory()
    question = Message.objects.create(conversation=conversation, role="user", content="Q")
    first = Message.objects.create(conversation=conversation, role="assistant", parent=question)
    second = Message.objects.create(conversation=conversation, role="assistant", parent=question)
    assert list(question.children.order_by("id")) == [first, second]


def test_client_message_id_is_unique_per_conversation(conversation_factory):
    conversation = conversation_factory()
    Message.objects.create(conversation=conversation, role="user", client_message_id="c1")
    Message.objects.create(conversation=conversation, role="user")  # blank ids never clash
    Message.objects.create(conversation=conversation, role="user")
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(conversation=conversation, role="user", client_message_id="c1")


def test_limit_scope_must_match_its_target(user):
    group = Group.objects.create(name="staff")
    RateLimit.objects.create(scope="default", requests_per_minute=5)
    RateLimit.objects.create(scope="group", group=group, requests_per_minute=10)
    RateLimit.objects.create(scope="user", user=user)
    with pytest.raises(IntegrityError), transaction.atomic():
        RateLimit.objects.create(scope="user", group=group)
    with pytest.raises(IntegrityError), transaction.atomic():
        RateLimit.objects.create(scope="default")


def test_strings_name_things(conversation_factory):
    conversation = conversation_factory(title="")
    assert str(conversation) == f"Conversation {conversation.pk}"
    message = Message(conversation=conversation, role="user", content="hello   world")
    assert str(message) == "user: hello world"
    assert str(ChatModel(model_id="openai/gpt-4o")) == "openai/gpt-4o"
    assert "tokens" in str(Usage(model_used="m", prompt_tokens=1, completion_tokens=2))
