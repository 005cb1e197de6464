"""Encryption at rest: Fernet tokens, key rotation (SEC-04), tampering (SEC-05), and the checks
on the encryption key list (streamchat.E010, E011, W010)."""

from __future__ import annotations

from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.test import override_settings

from streamchat import checks, crypto
from streamchat.keys import usable_keys
from streamchat.models import ApiKey

SECRET = "sk-or-v1-" + "0123456789abcdef" * 4


def keys_setting(*keys: str) -> dict:
    return {"ENCRYPTION_KEYS": list(keys)}


def ids(messages):
    return {m.id for m in messages}


def test_round_trip_and_the_token_hides_the_plaintext():
    token = crypto.encrypt(SECRET)
    assert SECRET not in token and SECRET[9:21] not in token
    assert crypto.decrypt(token) == SECRET
    # A fresh IV each time: equal secrets do not give equal tokens.
    assert crypto.encrypt(SECRET) != token


def test_derived_key_depends_on_secret_key_and_fallbacks_still_decrypt():
    with override_settings(STREAMCHAT={}, SECRET_KEY="first-secret-key-" * 3):
        token = crypto.encrypt(SECRET)
    with override_settings(STREAMCHAT={}, SECRET_KEY="second-secret-key-" * 3):
        with pytest.raises(crypto.UnreadableSecret):
            crypto.decrypt(token)
    with override_settings(
        STREAMCHAT={},
        SECRET_KEY="second-secret-key-" * 3,
        SECRET_KEY_FALLBACKS=["first-secret-key-" * 3],
    ):
        assert crypto.decrypt(token) == SECRET


def test_configured_keys_newest_first_all_decrypt():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with override_settings(STREAMCHAT=keys_setting(old)):
        token = crypto.encrypt(SECRET)
        assert crypto.is_current(token)
    with override_settings(STREAMCHAT=keys_setting(new, old)):
        assert crypto.decrypt(token) == SECRET
        assert not crypto.is_current(token)
        rotated = crypto.rotate(token)
        assert crypto.is_current(rotated)
    with override_settings(STREAMCHAT=keys_setting(new)):
        assert crypto.decrypt(rotated) == SECRET
        with pytest.raises(crypto.UnreadableSecret):
            crypto.decrypt(token)


@pytest.mark.parametrize("bad", ["", "garbage", "gAAAAA", "é", SECRET])
def test_unreadable_values_raise_one_error_without_the_value(bad):
    with pytest.raises(crypto.UnreadableSecret) as info:
        crypto.decrypt(bad)
    assert bad not in str(info.value) or bad == ""
    assert info.value.__cause__ is None


def test_key_problems_name_positions_never_keys():
    good = Fernet.generate_key().decode()
    assert crypto.key_problems([good]) == []
    assert crypto.key_problems([good, good.encode()]) == []
    problems = crypto.key_problems([good, "not-a-key-but-secret-ish"])
    assert problems and "ENCRYPTION_KEYS[1]" in problems[0] and "not-a-key" not in problems[0]
    assert "list" in crypto.key_problems(good)[0]
    assert crypto.key_problems([good, 5]) == ["ENCRYPTION_KEYS[1] is not a string."]


# --- checks (CHK) -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [["short"], "a-single-string-not-a-list", [Fernet.generate_key().decode(), None]]
)
def test_e010_malformed_encryption_key(value):
    with override_settings(STREAMCHAT={"ENCRYPTION_KEYS": value}):
        found = [m for m in checks.check_encryption_keys() if m.id == "streamchat.E010"]
    assert found
    assert all("short" not in m.msg for m in found)


def test_e010_quiet_for_good_keys():
    with override_settings(STREAMCHAT=keys_setting(Fernet.generate_key().decode())):
        assert checks.check_encryption_keys() == []


def test_e011_no_encryption_key_at_all():
    with override_settings(STREAMCHAT={}, SECRET_KEY=""):
        assert "streamchat.E011" in ids(checks.check_encryption_keys())
    with override_settings(STREAMCHAT={}):
        assert checks.check_encryption_keys() == []


def test_w010_key_derived_from_secret_key_is_a_deploy_warning():
    with override_settings(STREAMCHAT={}):
        assert "streamchat.W010" in ids(checks.check_encryption_key_is_dedicated())
    with override_settings(STREAMCHAT=keys_setting(Fernet.generate_key().decode())):
        assert checks.check_encryption_key_is_dedicated() == []


def test_w010_is_registered_for_deploy_only():
    from django.core.checks import run_checks

    with override_settings(STREAMCHAT={}):
        assert "streamchat.W010" not in ids(run_checks())
        assert "streamchat.W010" in ids(run_checks(include_deployment_checks=True))


# --- rotation (SEC-04) ------------------------------------------------------------------------


def _rotate() -> str:
    out = StringIO()
    call_command("rotate_encryption_keys", stdout=out, stderr=StringIO())
    return out.getvalue()


def _readable() -> list[str]:
    return sorted(
        crypto.decrypt(t) for t in ApiKey.objects.values_list("secret_encrypted", flat=True)
    )


@pytest.mark.django_db
def test_sec04_rotation_twice_then_remove_the_old_key():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    secrets = [f"sk-or-v1-{n:064x}" for n in range(3)]
    with override_settings(STREAMCHAT=keys_setting(old)):
        for n, secret in enumerate(secrets):
            ApiKey.objects.create(label=f"k{n}", secret_encrypted=crypto.encrypt(secret), hint="h")
    with override_settings(STREAMCHAT=keys_setting(new, old)):
        assert _readable() == secrets
        assert "re-encrypted 3, already current 0, unreadable 0" in _rotate()
        assert _readable() == secrets
        before = list(ApiKey.objects.order_by("pk").values_list("secret_encrypted", flat=True))
        assert "re-encrypted 0, already current 3, unreadable 0" in _rotate()
        # The second run wrote nothing.
        assert (
            list(ApiKey.objects.order_by("pk").values_list("secret_encrypted", flat=True)) == before
        )
    with override_settings(STREAMCHAT=keys_setting(new)):
        assert _readable() == secrets
        assert [k.id for k in usable_keys()] == list(
            ApiKey.objects.order_by("pk").values_list("pk", flat=True)
        )


@pytest.mark.django_db
def test_moving_from_the_derived_default_to_a_dedicated_key():
    with override_settings(STREAMCHAT={}):
        ApiKey.objects.create(label="dev", secret_encrypted=crypto.encrypt(SECRET), hint="h")
    new = Fernet.generate_key().decode()
    with override_settings(STREAMCHAT=keys_setting(new)):
        assert _readable() == [SECRET]  # the derived key still decrypts, last
        assert "re-encrypted 1" in _rotate()
        token = ApiKey.objects.get().secret_encrypted
        assert crypto.is_current(token)
    with override_settings(
        STREAMCHAT=keys_setting(new), SECRET_KEY="a-completely-new-secret-key-" * 2
    ):
        assert crypto.decrypt(token) == SECRET  # no longer tied to SECRET_KEY


@pytest.mark.django_db
def test_rotation_reports_unreadable_rows_and_dry_run_writes_nothing():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with override_settings(STREAMCHAT=keys_setting(old)):
        good = ApiKey.objects.create(
            label="good", secret_encrypted=crypto.encrypt(SECRET), hint="h"
        )
    ApiKey.objects.create(label="lost", secret_encrypted="gAAAAAbroken", hint="sk-or-v1-…dead")
    with override_settings(STREAMCHAT=keys_setting(new, old)):
        out, err = StringIO(), StringIO()
        call_command("rotate_encryption_keys", "--dry-run", stdout=out, stderr=err)
        assert "would re-encrypt 1, already current 0, unreadable 1" in out.getvalue()
        assert "lost (sk-or-v1-…dead)" in err.getvalue()
        good.refresh_from_db()
        assert not crypto.is_current(good.secret_encrypted)


# --- tampering (SEC-05) -----------------------------------------------------------------------


def _flip_one_byte(token: str, position: int) -> str:
    raw = bytearray(token.encode("ascii"))
    # Stay inside the base64 alphabet, so the value still looks like a token.
    raw[position] = ord("A") if raw[position] != ord("A") else ord("B")
    return raw.decode("ascii")


@pytest.mark.parametrize("position", [10, 40, 80, -5])
def test_sec05_flipped_byte_is_unreadable(position):
    token = crypto.encrypt(SECRET)
    with pytest.raises(crypto.UnreadableSecret):
        crypto.decrypt(_flip_one_byte(token, position))
