"""Personal API tokens: the chat's tokens page (make, shown once, name, revoke) and their admin
pages (list, revoke). No browser; these touch the ORM (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from streamchat.models import PersonalToken
from streamchat.tokens import TokenError, authenticate, create_token, hash_token

pytestmark = pytest.mark.django_db

URL = "/chat/tokens/"


@pytest.fixture
def client(user: Any) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get(URL)
    client.csrf = client.cookies["csrftoken"].value  # type: ignore[attr-defined]
    return client


def make(client: Client, **data: str) -> Any:
    return client.post(URL, {"action": "create", "csrfmiddlewaretoken": client.csrf, **data})


def test_the_page_needs_a_login_and_sends_csp_and_no_store(client: Client) -> None:
    anonymous = Client().get(URL)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/")
    page = client.get(URL)
    assert page.status_code == 200
    assert page["Cache-Control"] == "no-store"
    assert "script-src 'self'" in page["Content-Security-Policy"]
    html = page.content.decode()
    assert "No tokens yet." in html
    assert "http://testserver/chat/v1" in html  # the base URL to give an OpenAI client
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert " src=" in tag, tag  # no inline script


def test_a_new_token_is_shown_once_and_stored_as_a_hash(client: Client, user: Any) -> None:
    made = make(client, name="laptop <script>", expires_in="30")
    # POST/redirect/GET: the token is on the page the redirect leads to, not in the redirect.
    assert made.status_code == 303 and made["Location"] == URL
    assert made["Cache-Control"] == "no-store" and b"sc-" not in made.content
    response = client.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    token = re.search(r'id="sc-new-token"[^>]*value="(sc-[^"]+)"', html).group(1)
    assert "laptop &lt;script&gt;" in html and "laptop <script>" not in html
    row = PersonalToken.objects.get()
    assert row.user == user and row.name == "laptop <script>"
    assert row.token_hash == hash_token(token) and row.prefix == token[:10]
    assert timedelta(days=29) < row.expires - timezone.now() <= timedelta(days=30)
    assert authenticate(token) == user
    # Never again (a reload included): the list shows only the prefix, and the session forgot it.
    listed = client.get(URL).content.decode()
    assert token not in listed and f"{row.prefix}…" in listed and "active" in listed
    assert token not in str(dict(client.session))
    assert PersonalToken.objects.count() == 1


def test_reloading_after_making_a_token_makes_no_second_one(client: Client) -> None:
    # A browser's reload after POST/redirect/GET repeats the GET; only a resent POST could make
    # another token, and the browser has no POST left to resend.
    made = make(client, name="laptop")
    for _ in range(3):
        assert client.get(made["Location"]).status_code == 200
    assert PersonalToken.objects.count() == 1


def test_revoke_asks_first_on_a_page_that_needs_no_script(
    client: Client, user: Any, user_factory: Any
) -> None:
    row, _ = create_token(user, "laptop <b>")
    listed = client.get(URL).content.decode()
    confirm_url = reverse("streamchat:token-revoke", args=[row.pk])
    assert f'href="{confirm_url}"' in listed
    # Following the list's Revoke link revokes nothing: it asks.
    page = client.get(confirm_url)
    assert page.status_code == 200 and page["Cache-Control"] == "no-store"
    html = page.content.decode()
    assert "laptop &lt;b&gt;" in html and "cannot be undone" in html
    assert re.search(r'<form method="post" action="/chat/tokens/"', html)
    assert f'name="token" value="{row.pk}"' in html
    assert "script-src 'self'" in page["Content-Security-Policy"]
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    row.refresh_from_db()
    assert row.revoked is None
    # The confirmation's form revokes it; then its page only leads back to the list.
    confirmed = client.post(
        URL, {"action": "revoke", "token": row.pk, "csrfmiddlewaretoken": client.csrf}
    )
    assert confirmed.status_code == 302
    row.refresh_from_db()
    assert row.revoked is not None
    assert client.get(confirm_url)["Location"] == URL
    # Another user's token, or none, answers 404 alike; POST to the confirmation does nothing.
    theirs, _ = create_token(user_factory(), "theirs")
    assert client.get(reverse("streamchat:token-revoke", args=[theirs.pk])).status_code == 404
    assert client.get(reverse("streamchat:token-revoke", args=[999999])).status_code == 404
    posted = client.post(
        reverse("streamchat:token-revoke", args=[theirs.pk]),
        {"csrfmiddlewaretoken": client.csrf},
    )
    assert posted.status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked is None


def test_a_name_is_required_and_csrf_is_enforced(client: Client) -> None:
    empty = make(client, name="  ")
    assert empty.status_code == 400 and not PersonalToken.objects.exists()
    no_csrf = client.post(URL, {"action": "create", "name": "x"})
    assert no_csrf.status_code == 403 and not PersonalToken.objects.exists()


def test_revoking_works_on_own_tokens_only(client: Client, user: Any, user_factory: Any) -> None:
    mine, token = create_token(user, "mine")
    theirs, their_token = create_token(user_factory(), "theirs")
    for row in (theirs, mine):
        response = client.post(
            URL, {"action": "revoke", "token": row.pk, "csrfmiddlewaretoken": client.csrf}
        )
        assert response.status_code == 302
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.revoked is not None and theirs.revoked is None
    with pytest.raises(TokenError, match="revoked"):
        authenticate(token)
    assert authenticate(their_token) == theirs.user
    assert "Revoke mine" not in client.get(URL).content.decode()  # no button on a revoked one


def test_expired_tokens_are_refused_and_listed_as_expired(client: Client, user: Any) -> None:
    _, token = create_token(user, "old", expires=timezone.now() - timedelta(minutes=1))
    with pytest.raises(TokenError, match="expired"):
        authenticate(token)
    assert "expired" in client.get(URL).content.decode()


def test_admin_lists_tokens_and_revokes_them_with_the_action(
    admin_client: Client, user: Any
) -> None:
    active, _ = create_token(user, "<b>script</b>")
    other, _ = create_token(user, "other")
    changelist = reverse("admin:streamchat_personaltoken_changelist")
    page = admin_client.get(changelist)
    assert page.status_code == 200
    html = page.content.decode()
    assert f"{active.prefix}…" in html and "&lt;b&gt;script&lt;/b&gt;" in html
    assert active.token_hash not in html
    assert admin_client.get(reverse("admin:streamchat_personaltoken_add")).status_code == 403
    detail = admin_client.get(reverse("admin:streamchat_personaltoken_change", args=[active.pk]))
    assert detail.status_code == 200 and active.token_hash not in detail.content.decode()
    response = admin_client.post(
        changelist,
        {"action": "revoke_selected", "_selected_action": [active.pk]},
        follow=True,
    )
    assert "Revoked 1 token." in response.content.decode()
    active.refresh_from_db()
    other.refresh_from_db()
    assert active.revoked is not None and other.revoked is None
    filtered = admin_client.get(changelist, {"status": "revoked"}).content.decode()
    assert "&lt;b&gt;script&lt;/b&gt;" in filtered and ">other<" not in filtered
