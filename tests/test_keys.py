"""Which keys a reply may use (failover order), what is recorded on them, and first-run seeding."""

from __future__ import annotations

import logging

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import override_settings

from streamchat import crypto
from streamchat.keys import (
    KeyChoice,
    arecord_key_failure,
    arecord_key_used,
    ausable_keys,
    key_hint,
    record_key_failure,
    record_key_used,
    usable_keys,
)
from streamchat.models import ApiKey
from streamchat.seeding import SEEDED_LABEL, seed_api_key, seed_on_migrate

pytestmark = pytest.mark.django_db

ENV_SECRET = "sk-or-v1-" + "e" * 60 + "f00d"


def make_key(secret: str, **fields) -> ApiKey:
    fields.setdefault("label", secret[-6:])
    return ApiKey.objects.create(
        secret_encrypted=crypto.encrypt(secret), hint=key_hint(secret), **fields
    )


def secret(n: int) -> str:
    return f"sk-or-v1-{n:064x}"


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("sk-or-v1-" + "0" * 60 + "a1b2", "sk-or-v1-…a1b2"),
        ("sk-or-abcdefghijklmnop", "sk-or-…mnop"),
        ("sk-or-v1-short", "sk-or-v1-…"),
        ("  sk-or-v1-" + "9" * 60 + "zzzz\n", "sk-or-v1-…zzzz"),
    ],
)
def test_hint_shows_the_prefix_and_four_characters_at_most(value, hint):
    assert key_hint(value) == hint


def test_keychoice_repr_hides_the_secret():
    choice = KeyChoice(id=3, secret=secret(1), hint=key_hint(secret(1)))
    assert secret(1) not in repr(choice) and secret(1) not in str(choice)


def test_active_readable_keys_by_priority_then_id():
    third = make_key(secret(3), priority=20)
    first = make_key(secret(1), priority=5)
    second = make_key(secret(2), priority=5)
    make_key(secret(4), priority=1, is_active=False)
    keys = usable_keys()
    assert [k.id for k in keys] == [first.pk, second.pk, third.pk]
    assert [k.secret for k in keys] == [secret(1), secret(2), secret(3)]
    assert keys[0].hint == key_hint(secret(1))


@override_settings(STREAMCHAT={"API_KEY": ENV_SECRET})
def test_setting_is_the_fallback_only_when_no_row_is_usable():
    assert [(k.id, k.secret) for k in usable_keys()] == [(None, ENV_SECRET)]
    row = make_key(secret(1))
    assert [k.id for k in usable_keys()] == [row.pk]


@override_settings(STREAMCHAT={"API_KEY": ENV_SECRET})
def test_a_key_switched_off_in_admin_is_not_used_from_the_setting_either():
    make_key(ENV_SECRET, is_active=False)
    assert usable_keys() == []
    make_key(secret(2), is_active=False)  # another disabled key does not matter
    ApiKey.objects.filter(hint=key_hint(ENV_SECRET)).delete()
    assert [k.id for k in usable_keys()] == [None]


@override_settings(STREAMCHAT={"API_KEY": ENV_SECRET})
def test_sec05_unreadable_row_is_skipped_recorded_once_and_chat_falls_over(caplog):
    broken = make_key(secret(1), priority=1)
    good = make_key(secret(2), priority=2)
    token = broken.secret_encrypted
    ApiKey.objects.filter(pk=broken.pk).update(
        secret_encrypted=token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    )
    with caplog.at_level(logging.ERROR, logger="streamchat.keys"):
        assert [k.id for k in usable_keys()] == [good.pk]
        assert [k.id for k in usable_keys()] == [good.pk]
    broken.refresh_from_db()
    assert broken.last_error == crypto.UNREADABLE_MESSAGE and broken.is_failing
    assert len([r for r in caplog.records if "skipped" in r.getMessage()]) == 1
    # With no readable row left, the setting takes over.
    good.delete()
    assert [k.id for k in usable_keys()] == [None]


def test_record_failure_and_use_write_the_row_and_never_the_secret():
    row = make_key(secret(7))
    choice = usable_keys()[0]
    record_key_failure(choice, f"401 for key {secret(7)}: User not found.")
    row.refresh_from_db()
    assert row.is_failing and row.last_error_at is not None
    assert secret(7) not in row.last_error and key_hint(secret(7)) in row.last_error
    record_key_used(choice)
    row.refresh_from_db()
    assert row.last_used is not None


def test_recording_for_the_setting_fallback_touches_no_row(caplog):
    choice = KeyChoice(id=None, secret=ENV_SECRET, hint=key_hint(ENV_SECRET))
    with caplog.at_level(logging.WARNING, logger="streamchat.keys"):
        record_key_failure(choice, f"bad key {ENV_SECRET}")
        record_key_used(choice)
    assert ENV_SECRET not in caplog.text and key_hint(ENV_SECRET) in caplog.text


@pytest.mark.django_db(transaction=True)
async def test_async_twins():
    try:
        row = await ApiKey.objects.acreate(
            label="a", secret_encrypted=crypto.encrypt(secret(9)), hint=key_hint(secret(9))
        )
        keys = await ausable_keys()
        assert [k.id for k in keys] == [row.pk]
        await arecord_key_used(keys[0])
        await arecord_key_failure(keys[0], "Out of credits")
        await row.arefresh_from_db()
        assert row.last_used is not None and row.last_error == "Out of credits"
    finally:
        # The async ORM's worker thread keeps its connection; close it so the test database
        # can be dropped at the end of the run.
        await sync_to_async(connections.close_all)()


# --- first run: the API_KEY setting seeds a row -----------------------------------------------


@override_settings(STREAMCHAT={"API_KEY": ENV_SECRET})
def test_setting_seeds_one_encrypted_key_on_first_migrate_only():
    from django.apps import apps

    seed_on_migrate(sender=apps.get_app_config("streamchat"), using="default")
    row = ApiKey.objects.get()
    assert row.label == SEEDED_LABEL and row.hint == key_hint(ENV_SECRET)
    assert (
        ENV_SECRET not in row.secret_encrypted
        and crypto.decrypt(row.secret_encrypted) == ENV_SECRET
    )
    assert seed_api_key() is None  # the table is no longer empty
    assert ApiKey.objects.count() == 1
    assert [k.id for k in usable_keys()] == [row.pk]


@pytest.mark.parametrize("value", [None, "", "not-an-openrouter-key"])
def test_no_seed_without_a_proper_key(value, settings):
    settings.STREAMCHAT = {"API_KEY": value}
    assert seed_api_key() is None
    assert not ApiKey.objects.exists()


# --- SEC-05: when no key is usable, the error says why ------------------------------------------


def _flip(row: ApiKey) -> None:
    token = row.secret_encrypted
    ApiKey.objects.filter(pk=row.pk).update(
        secret_encrypted=token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    )


def test_no_key_message_tells_unreadable_keys_from_none_at_all():
    from streamchat.keys import NO_KEY_MESSAGE, UNREADABLE_KEYS_MESSAGE, no_key_message

    assert no_key_message() == NO_KEY_MESSAGE
    make_key(secret(5), is_active=False)  # a switched-off key is no key
    assert no_key_message() == NO_KEY_MESSAGE
    broken = make_key(secret(6))
    _flip(broken)
    assert usable_keys() == []
    assert no_key_message() == UNREADABLE_KEYS_MESSAGE
    make_key(secret(7))  # one readable key: not the decryption's fault
    assert no_key_message() == NO_KEY_MESSAGE


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stored", ["unreadable", "none"])
async def test_sec05_chat_error_says_the_keys_cannot_be_decrypted(
    user, chat_socket, simulator, settings, stored
):
    settings.STREAMCHAT = {**settings.STREAMCHAT, "BASE_URL": simulator.base_url, "API_KEY": None}
    if stored == "unreadable":
        await sync_to_async(lambda: [_flip(make_key(secret(n))) for n in (1, 2)])()
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "k", "content": "Anyone there?"})
    finished = await socket.recv_until("reply.finished")

    error = finished["error"]
    assert error["code"] == "no_api_key"
    if stored == "unreadable":
        assert "cannot be decrypted" in error["message"] and "ENCRYPTION_KEYS" in error["message"]
        assert "No OpenRouter API key is configured" not in error["message"]
    else:
        assert error["message"].startswith("No OpenRouter API key is configured")
    assert simulator.chat_requests == []
    await socket.close()
