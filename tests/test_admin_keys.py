"""API keys in admin: only ciphertext at rest (SEC-01), write-only secret (SEC-02), unreadable
values (SEC-05), format checks, and "Verify with OpenRouter" against the simulator."""

from __future__ import annotations

import logging
import re

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.sessions.backends.db import SessionStore
from django.db import connection
from django.urls import reverse
from django.views.debug import SafeExceptionReporterFilter

from streamchat import crypto
from streamchat.keys import key_hint
from streamchat.models import ApiKey

pytestmark = pytest.mark.django_db

SECRET = "sk-or-v1-" + "3f9c2a7be0d14c68a5f1e2d3c4b5a6978877665544332211ffeeddccbbaa" + "a1b2"
SECRET_PART = SECRET[len("sk-or-v1-") :]
ADD = "admin:streamchat_apikey_add"


def pieces(secret_part: str, size: int = 12) -> list[str]:
    return [secret_part[i : i + size] for i in range(len(secret_part) - size + 1)]


def assert_no_secret(text: str, secret: str = SECRET) -> None:
    part = secret[len("sk-or-v1-") :]
    assert secret not in text
    leaked = [p for p in pieces(part) if p in text]
    assert not leaked, f"a 12-character piece of the secret leaked: {leaked[:1]}"


def dump_database() -> str:
    """Every value of every table, as text (what a raw SQL dump would show)."""
    out = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            for row in cursor.fetchall():
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        value = bytes(value).decode("latin-1")
                    out.append(str(value))
    return "\n".join(out)


def add_key(client, secret: str = SECRET, **fields) -> object:
    data = {"label": "Main key", "secret": secret, "is_active": "on", "priority": "10", **fields}
    return client.post(reverse(ADD), data)


def stored_key(secret: str, **fields) -> ApiKey:
    fields.setdefault("label", "stored")
    return ApiKey.objects.create(
        secret_encrypted=crypto.encrypt(secret), hint=key_hint(secret), **fields
    )


def test_sec01_raw_sql_shows_only_ciphertext(admin_client):
    response = add_key(admin_client)
    assert response.status_code == 302, response.content
    key = ApiKey.objects.get()
    assert key.hint == "sk-or-v1-…a1b2"
    assert crypto.decrypt(key.secret_encrypted) == SECRET
    dump = dump_database()
    assert key.secret_encrypted in dump  # the dump did read the table
    assert_no_secret(dump)


def test_sec02_secret_appears_on_no_admin_page_and_blank_keeps_it(admin_client):
    responses = [admin_client.get(reverse(ADD)), add_key(admin_client)]
    key = ApiKey.objects.get()
    token = key.secret_encrypted
    urls = [
        reverse("admin:streamchat_apikey_changelist"),
        reverse("admin:streamchat_apikey_change", args=[key.pk]),
        reverse("admin:streamchat_apikey_history", args=[key.pk]),
        reverse("admin:streamchat_apikey_delete", args=[key.pk]),
        reverse("admin:index"),
    ]
    for url in urls:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        responses.append(response)
    for response in responses:
        assert_no_secret(response.content.decode())
    change = admin_client.get(
        reverse("admin:streamchat_apikey_change", args=[key.pk])
    ).content.decode()
    assert "sk-or-v1-…a1b2" in change
    secret_input = re.search(r'<input[^>]*name="secret"[^>]*>', change).group(0)
    assert 'type="password"' in secret_input and "value=" not in secret_input
    # Saving with the secret left blank keeps the stored one, byte for byte.
    response = admin_client.post(
        reverse("admin:streamchat_apikey_change", args=[key.pk]),
        {"label": "Renamed", "secret": "", "is_active": "on", "priority": "3"},
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert (key.label, key.priority, key.secret_encrypted) == ("Renamed", 3, token)
    # The history says a field changed, never what it was.
    assert_no_secret(
        " ".join(str(e.change_message) + e.object_repr for e in LogEntry.objects.all())
    )


def test_sec02_new_secret_replaces_the_old_and_clears_its_record(admin_client):
    key = stored_key(SECRET, last_error="User not found.")
    new = "sk-or-v1-" + "9" * 60 + "beef"
    response = admin_client.post(
        reverse("admin:streamchat_apikey_change", args=[key.pk]),
        {"label": "k", "secret": new, "is_active": "on", "priority": "1"},
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert crypto.decrypt(key.secret_encrypted) == new and key.hint == "sk-or-v1-…beef"
    assert key.last_error == "" and not key.is_failing


def test_form_redisplayed_with_errors_does_not_echo_the_secret(admin_client):
    response = add_key(admin_client, label="")
    assert response.status_code == 200
    assert "This field is required" in response.content.decode()
    assert_no_secret(response.content.decode())
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not-a-key-at-all-1234", "OpenRouter keys start with “sk-or-”"),
        ("sk-proj-abcdefghijklmnop", "OpenRouter keys start with “sk-or-”"),
        ("sk-or-v1-abc def ghi jkl", "spaces or line breaks"),
        ("sk-or-v1", "does not look like a whole OpenRouter key"),
        ("sk-or-v1-<script>alert(1)</script>", "does not look like a whole OpenRouter key"),
        ("", "This field is required"),
    ],
)
def test_format_is_checked_with_a_clear_error(admin_client, value, message):
    response = add_key(admin_client, secret=value)
    assert response.status_code == 200
    page = response.content.decode()
    assert message in page
    if value:
        assert value not in page
    assert not ApiKey.objects.exists()


def test_sensitive_post_parameters_hide_the_secret_from_error_reports(rf, admin_user):
    request = rf.post(reverse(ADD), {"label": "x", "secret": SECRET})
    request.user = admin_user
    request.session = SessionStore()
    request._messages = FallbackStorage(request)
    admin.site._registry[ApiKey].changeform_view(request)
    # What a 500 page or an error mail would show of this request's POST.
    post = SafeExceptionReporterFilter().get_post_parameters(request)
    assert post["secret"] != SECRET and "*" in post["secret"]


def test_sec05_unreadable_key_shown_as_such_without_a_500(admin_client):
    key = stored_key(SECRET)
    token = key.secret_encrypted
    ApiKey.objects.filter(pk=key.pk).update(
        secret_encrypted=token[:30] + ("A" if token[30] != "A" else "B") + token[31:]
    )
    changelist = admin_client.get(reverse("admin:streamchat_apikey_changelist"))
    change = admin_client.get(reverse("admin:streamchat_apikey_change", args=[key.pk]))
    for response in (changelist, change):
        assert response.status_code == 200
        assert "streamchat-badge-unreadable" in response.content.decode()
    # Verifying it says so instead of sending garbage upstream.
    response = admin_client.post(
        reverse("admin:streamchat_apikey_changelist"),
        {"action": "verify", "_selected_action": [key.pk], "index": "0"},
        follow=True,
    )
    assert "cannot be decrypted" in response.content.decode()


# --- Verify with OpenRouter (the simulator's /key) --------------------------------------------


def verify(client, *keys: ApiKey):
    return client.post(
        reverse("admin:streamchat_apikey_changelist"),
        {"action": "verify", "_selected_action": [k.pk for k in keys], "index": "0"},
        follow=True,
    )


def test_verify_good_key_shows_label_limit_usage_and_remaining(
    admin_client, simulator_settings, caplog
):
    simulator_settings.add_key(SECRET, credits="25")
    key = stored_key(SECRET)
    with caplog.at_level(logging.DEBUG):
        response = verify(admin_client, key)
    page = response.content.decode()
    assert "limit $25.00" in page and "used $0.00" in page and "remaining $25.00" in page
    key.refresh_from_db()
    assert key.last_verified is not None and not key.is_failing
    assert key.account["limit_remaining"] == 25 and key.account["label"]
    listing = admin_client.get(reverse("admin:streamchat_apikey_changelist")).content.decode()
    assert "$25.00" in listing and "streamchat-badge-active" in listing
    assert_no_secret(page + caplog.text)


def test_verify_bad_key_marks_it_failing(admin_client, simulator_settings, caplog):
    key = stored_key(SECRET)  # unknown to the simulator: 401
    with caplog.at_level(logging.DEBUG):
        response = verify(admin_client, key)
    key.refresh_from_db()
    assert key.is_failing and key.last_error and key.last_verified is None
    page = response.content.decode()
    assert f"({key.hint}): {key.last_error}" in page
    listing = admin_client.get(reverse("admin:streamchat_apikey_changelist")).content.decode()
    assert "streamchat-badge-failing" in listing
    assert_no_secret(page + listing + caplog.text)


def test_verify_out_of_credits_marks_it_failing(admin_client, simulator_settings):
    simulator_settings.add_key(SECRET, credits=0)
    key = stored_key(SECRET)
    page = verify(admin_client, key).content.decode()
    key.refresh_from_db()
    assert "Out of credits" in page and key.is_failing
    assert key.account["limit_remaining"] == 0


def test_verify_several_keys_reports_each(admin_client, simulator_settings):
    good, poor = "sk-or-v1-" + "1" * 64, "sk-or-v1-" + "2" * 64
    simulator_settings.add_key(good)
    simulator_settings.add_key(poor, credits=0)
    keys = [
        stored_key(good, label="good"),
        stored_key(poor, label="poor"),
        stored_key("sk-or-v1-" + "3" * 64, label="bad"),
    ]
    page = verify(admin_client, *keys).content.decode()
    assert page.count("messagelist") == 1
    assert "remaining unlimited" in page and "Out of credits" in page
    states = {k.label: k.is_failing for k in ApiKey.objects.all()}
    assert states == {"good": False, "poor": True, "bad": True}


def test_activate_and_disable_actions(admin_client):
    key = stored_key(SECRET)
    admin_client.post(
        reverse("admin:streamchat_apikey_changelist"),
        {"action": "deactivate", "_selected_action": [key.pk], "index": "0"},
    )
    key.refresh_from_db()
    assert not key.is_active
    assert (
        "streamchat-badge-disabled"
        in admin_client.get(reverse("admin:streamchat_apikey_changelist")).content.decode()
    )
    admin_client.post(
        reverse("admin:streamchat_apikey_changelist"),
        {"action": "activate", "_selected_action": [key.pk], "index": "0"},
    )
    key.refresh_from_db()
    assert key.is_active
