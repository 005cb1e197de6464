"""CHK: streamchat's security checks, each with a bad and a good setting, and the demo's production
settings passing ``manage.py check --deploy`` with no warning. (E001-E004, W001, W002 are in
tests/test_checks.py; E010, E011 and W010 in tests/test_crypto.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.management.utils import get_random_secret_key
from django.test import override_settings

from streamchat import checks

ROOT = Path(__file__).resolve().parent.parent


def ids(messages) -> set[str]:
    return {m.id for m in messages}


@pytest.mark.parametrize(
    ("hosts", "fires"),
    [
        (["*"], True),
        (["chat.example.com", "*"], True),
        (["chat.example.com", ".example.org"], False),
    ],
)
def test_chk_w011_allowed_hosts_wildcard(hosts, fires):
    with override_settings(ALLOWED_HOSTS=hosts):
        assert ("streamchat.W011" in ids(checks.check_allowed_hosts_wildcard())) is fires


@pytest.mark.parametrize(
    ("debug", "fail_open", "fires"),
    [(False, True, True), (True, True, False), (False, False, False)],
)
def test_chk_w020_limits_fail_open_in_production(settings, debug, fail_open, fires):
    with override_settings(
        DEBUG=debug, STREAMCHAT={**settings.STREAMCHAT, "LIMITS_FAIL_OPEN": fail_open}
    ):
        assert ("streamchat.W020" in ids(checks.check_limits_fail_closed())) is fires


def run_production_check(tmp_path: Path, **overrides: str) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "STREAMCHAT_", "DATABASE_URL", "REDIS_URL"))
    }
    environment.update(
        DJANGO_SETTINGS_MODULE="orchat_site.settings_production",
        SECRET_KEY=get_random_secret_key(),
        ALLOWED_HOSTS="chat.example.com",
        CSRF_TRUSTED_ORIGINS="https://chat.example.com",
        STREAMCHAT_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        REDIS_URL="redis://127.0.0.1:6379/0",
        DATABASE_URL=f"sqlite:///{tmp_path / 'check.sqlite3'}",
    )
    for key, value in overrides.items():
        if value:
            environment[key] = value
        else:
            environment.pop(key, None)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.once
def test_chk_production_settings_pass_check_deploy_with_no_warning(tmp_path):
    result = run_production_check(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


@pytest.mark.once
def test_chk_production_settings_with_a_wildcard_host_warn(tmp_path):
    result = run_production_check(tmp_path, ALLOWED_HOSTS="*")
    assert result.returncode != 0
    assert "streamchat.W011" in result.stderr + result.stdout


@pytest.mark.once
def test_chk_production_settings_refuse_to_start_without_a_secret_key(tmp_path):
    result = run_production_check(tmp_path, SECRET_KEY="")
    assert result.returncode != 0
    assert "ImproperlyConfigured: Set the SECRET_KEY environment variable" in result.stderr
