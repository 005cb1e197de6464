"""The demo site a new user meets: login page, admin, demo logins."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_login_page_and_admin_are_served(client):
    page = client.get("/login/")
    assert page.status_code == 200 and b'name="password"' in page.content
    assert client.get("/admin/").status_code == 302  # to the admin login


def test_demo_setup_creates_logins_once_and_prints_them(client, capsys):
    call_command("demo_setup")
    call_command("demo_setup")
    out = capsys.readouterr().out
    assert "demo / demo-pass-1234" in out and "admin / admin-pass-1234" in out
    User = get_user_model()
    assert User.objects.filter(username__in=["demo", "admin"]).count() == 2
    assert client.login(username="admin", password="admin-pass-1234")
    assert client.get("/admin/").status_code == 200
    client.logout()
    assert client.login(username="demo", password="demo-pass-1234")
    assert client.get("/admin/").status_code == 302  # not staff
