"""The per-process snapshots of models, keys and limit rules (streamchat.snapshots): a change
saved in this process applies to the next send at once; a change this process cannot see (a bulk
update, another worker) applies once the snapshot is older than ``CONFIG_CACHE_SECONDS``."""

from __future__ import annotations

import time
from typing import Any

import pytest

from streamchat import snapshots
from streamchat.exceptions import ChatError
from streamchat.limits.resolution import effective_limits, effective_limits_from
from streamchat.models import ChatModel, RateLimit
from streamchat.streaming.store import choose_model

pytestmark = [pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _cache(settings: Any) -> None:
    settings.STREAMCHAT = {**settings.STREAMCHAT, "CONFIG_CACHE_SECONDS": 60}


def test_a_model_switched_off_and_saved_is_refused_at_once() -> None:
    model = ChatModel.objects.create(model_id="a/one", enabled=True, is_default=True)
    ChatModel.objects.create(model_id="a/two", enabled=True)
    assert choose_model("a/one").model_id == "a/one"
    model.enabled = False
    model.save()
    with pytest.raises(ChatError) as refused:
        choose_model("a/one")
    assert refused.value.code == "model_unavailable"
    assert choose_model(None).model_id == "a/two"


def test_a_bulk_update_applies_once_the_snapshot_is_old(settings: Any) -> None:
    ChatModel.objects.create(model_id="a/one", enabled=True)
    assert choose_model("a/one").model_id == "a/one"
    ChatModel.objects.update(enabled=False)  # no signal: this process's copy is kept...
    assert choose_model("a/one").model_id == "a/one"
    settings.STREAMCHAT = {**settings.STREAMCHAT, "CONFIG_CACHE_SECONDS": 0.05}
    snapshots.enabled_models.get()
    ChatModel.objects.update(enabled=True, system_prompt="New rules.")
    time.sleep(0.1)  # ...until it is older than CONFIG_CACHE_SECONDS
    assert choose_model("a/one").system_prompt == "New rules."


def test_limit_rules_from_the_snapshot_equal_a_fresh_read(user_factory: Any) -> None:
    from django.contrib.auth.models import Group

    plain, grouped, own = user_factory(), user_factory(), user_factory()
    group = Group.objects.create(name="g")
    grouped.groups.add(group)
    RateLimit.objects.create(scope="default", requests_per_day=10)
    RateLimit.objects.create(scope="group", group=group, requests_per_day=50)
    RateLimit.objects.create(scope="user", user=own, requests_per_day=5)
    for user in (plain, grouped, own):
        assert effective_limits_from(snapshots.limit_rules.get(), user) == effective_limits(user)
    # A change to group membership clears the snapshot (m2m signal).
    grouped.groups.remove(group)
    assert effective_limits_from(snapshots.limit_rules.get(), grouped).requests_per_day == 10


def test_zero_reads_for_every_send(settings: Any) -> None:
    settings.STREAMCHAT = {**settings.STREAMCHAT, "CONFIG_CACHE_SECONDS": 0}
    ChatModel.objects.create(model_id="a/one", enabled=True)
    assert choose_model("a/one")
    ChatModel.objects.update(enabled=False)
    with pytest.raises(ChatError):
        choose_model("a/one")
