from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from streamchat.models import Conversation
from tests.services import require_service

pytest_plugins = ["tests.simulator_fixtures", "tests.live_fixtures"]

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

_counter = itertools.count(1)


@pytest.fixture
def user_factory(db: None) -> Callable[..., Any]:
    def make(**fields: Any) -> Any:
        n = next(_counter)
        fields.setdefault("username", f"user{n}")
        password = fields.pop("password", "pass-1234-word")
        user = get_user_model().objects.create_user(password=password, **fields)
        user.raw_password = password
        return user

    return make


@pytest.fixture
def user(user_factory: Callable[..., Any]) -> Any:
    return user_factory()


@pytest.fixture
def conversation_factory(user_factory: Callable[..., Any]) -> Callable[..., Conversation]:
    def make(**fields: Any) -> Conversation:
        if "owner" not in fields:
            fields["owner"] = user_factory()
        return Conversation.objects.create(**fields)

    return make


@pytest.fixture
def redis_url() -> str:
    """The running Redis (database 15, flushed), or a clear skip outside CI."""
    require_service("Redis", "127.0.0.1", 6379)
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    client.close()
    return REDIS_URL
