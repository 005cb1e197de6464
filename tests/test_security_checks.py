"""CHK: streamchat's security checks, each with a bad and a good setting, and the demo's production
settings passing ``manage.py check --deploy`` with no warning. (E001-E004, W001, W002 are in
tests/test_checks.py; E010, E011 and W010 in tests/test_crypto.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
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


@pytest.mark.parametrize(
    ("hosts", "fires"),
    [
        ([".example.com"], True),
        (["chat.example.com", ".example.org"], True),
        (["chat.example.com", "localhost"], False),
        (["*"], False),  # W011's
    ],
)
def test_chk_w012_allowed_hosts_subdomain_wildcard(hosts, fires):
    with override_settings(ALLOWED_HOSTS=hosts):
        found = ids(checks.check_allowed_hosts_subdomains())
    assert found == ({"streamchat.W012"} if fires else set())


@pytest.mark.parametrize(
    ("samesite", "fires"),
    [("None", True), ("none", True), ("Lax", False), ("Strict", False), (False, False)],
)
def test_chk_w013_session_cookie_samesite_none(samesite, fires):
    with override_settings(SESSION_COOKIE_SAMESITE=samesite):
        found = ids(checks.check_session_cookie_samesite())
    assert found == ({"streamchat.W013"} if fires else set())


@pytest.mark.parametrize(
    ("conn_max_age", "asgi", "fires"),
    [
        (60, "orchat_site.asgi.application", True),
        (None, "orchat_site.asgi.application", True),
        (0, "orchat_site.asgi.application", False),
        (60, None, False),  # not served over ASGI (E001 says so)
    ],
)
def test_chk_w014_persistent_connections_under_asgi(settings, conn_max_age, asgi, fires):
    databases = {
        alias: {**database, "CONN_MAX_AGE": conn_max_age}
        for alias, database in settings.DATABASES.items()
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Overriding setting DATABASES": the check only reads it
        with override_settings(DATABASES=databases, ASGI_APPLICATION=asgi):
            found = ids(checks.check_persistent_connections())
    assert found == ({"streamchat.W014"} if fires else set())


# ASGI applications for the origin-validator checks, named by ASGI_APPLICATION below.
def _stack(validator=None, *, mapping_key="websocket"):
    from channels.auth import AuthMiddlewareStack
    from channels.routing import ProtocolTypeRouter, URLRouter

    from streamchat.routing import websocket_urlpatterns

    inner = AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
    return ProtocolTypeRouter(
        {"http": lambda *a: None, mapping_key: validator(inner) if validator else inner}
    )


def _nested_same_origin():
    # The validator inside a URLRouter route, in front of the consumer only.
    from channels.auth import AuthMiddlewareStack
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.urls import path

    from streamchat.consumers import ChatConsumer
    from streamchat.origin import SameOriginValidator

    route = path("ws/streamchat/", SameOriginValidator(ChatConsumer.as_asgi()))
    return ProtocolTypeRouter({"websocket": AuthMiddlewareStack(URLRouter([route]))})


def _one_route_unguarded():
    # Guarded on one path to the consumer, not on another: the weaker one counts.
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.urls import path

    from streamchat.consumers import ChatConsumer
    from streamchat.origin import SameOriginValidator

    routes = [
        path("ws/streamchat/", SameOriginValidator(ChatConsumer.as_asgi())),
        path("other/streamchat/", ChatConsumer.as_asgi()),
    ]
    return ProtocolTypeRouter({"websocket": URLRouter(routes)})


class _Broken:
    def __getattr__(self, name):
        raise RuntimeError("inspecting this app fails")


def _origin_apps():
    from channels.security.websocket import AllowedHostsOriginValidator

    from streamchat.asgi import chat_application
    from streamchat.origin import SameOriginValidator

    return {
        "UNGUARDED": _stack(),
        "STOCK_GUARDED": _stack(AllowedHostsOriginValidator),
        "SAME_ORIGIN": _stack(SameOriginValidator),
        "BOTH": _stack(lambda inner: AllowedHostsOriginValidator(SameOriginValidator(inner))),
        "NESTED_SAME_ORIGIN": _nested_same_origin(),
        "ONE_ROUTE_UNGUARDED": _one_route_unguarded(),
        "NO_WEBSOCKET": _stack(mapping_key="lifespan"),
        "HELPER": chat_application(lambda *a: None),
        "HELPER_ELSEWHERE": chat_application(lambda *a: None, websocket_path="/rt/chat/"),
    }


def __getattr__(name):  # module attributes that ASGI_APPLICATION names, built on first use
    apps = _origin_apps()
    if name in apps:
        return apps[name]
    raise AttributeError(name)


@pytest.mark.parametrize(
    ("application", "expected"),
    [
        ("tests.test_security_checks.UNGUARDED", {"streamchat.W015"}),
        ("tests.test_security_checks.ONE_ROUTE_UNGUARDED", {"streamchat.W015"}),
        ("tests.test_security_checks.STOCK_GUARDED", {"streamchat.W016"}),
        ("tests.test_security_checks.SAME_ORIGIN", set()),
        ("tests.test_security_checks.BOTH", set()),
        ("tests.test_security_checks.NESTED_SAME_ORIGIN", set()),
        ("tests.test_security_checks.NO_WEBSOCKET", set()),
        ("orchat_site.asgi.application", set()),  # the demo's own
        ("tests.test_security_checks.HELPER", set()),  # streamchat.asgi.chat_application's
        ("tests.test_security_checks.HELPER_ELSEWHERE", set()),
        ("tests.test_security_checks.NO_SUCH_APP", {"streamchat.W017"}),
        ("tests.no_such_module.application", {"streamchat.W017"}),
        ("tests.test_security_checks.BROKEN", {"streamchat.W017"}),
    ],
)
def test_chk_w015_w016_w017_websocket_origin_validator(application, expected):
    with override_settings(ASGI_APPLICATION=application):
        assert ids(checks.check_websocket_origin_validator()) == expected


BROKEN = _Broken()


@pytest.mark.parametrize(
    ("package", "installed", "expected"),
    [
        ("daphne", "4.2.1", {"streamchat.W018"}),
        ("daphne", "4.2.2rc1", {"streamchat.W018"}),
        ("daphne", "4.1.2", {"streamchat.W018"}),
        ("daphne", "4.2.2", set()),
        ("daphne", "4.10", set()),
        ("uvicorn", "0.11.6", {"streamchat.W019"}),
        ("uvicorn", "0.11.7", set()),
        ("uvicorn", "0.55.0", set()),
    ],
)
def test_chk_w018_w019_asgi_server_versions(tmp_path, monkeypatch, package, installed, expected):
    # A real installed distribution, in a directory put first on sys.path, is what
    # importlib.metadata finds for that name; the other server is whatever the venv has (new).
    dist = tmp_path / f"{package}-{installed}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {package}\nVersion: {installed}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert ids(checks.check_asgi_server_versions()) == expected


def test_chk_asgi_server_versions_of_this_venv_pass():
    assert ids(checks.check_asgi_server_versions()) == set()


@pytest.mark.parametrize("which", ["secret_key", "fallback", "derived"])
def test_chk_e012_encryption_key_is_the_secret_key(settings, which):
    from streamchat.crypto import derive_key

    secret = Fernet.generate_key().decode()  # a SECRET_KEY that is also a valid Fernet key
    fallback = Fernet.generate_key().decode()
    key = {
        "secret_key": secret,
        "fallback": fallback,
        "derived": derive_key(secret).decode(),
    }[which]
    streamchat = {**settings.STREAMCHAT, "ENCRYPTION_KEYS": [Fernet.generate_key().decode(), key]}
    with override_settings(
        SECRET_KEY=secret, SECRET_KEY_FALLBACKS=[fallback], STREAMCHAT=streamchat
    ):
        found = checks.check_encryption_key_is_not_secret_key()
        assert ids(found) == {"streamchat.E012"}
        assert "ENCRYPTION_KEYS[1]" in found[0].msg and key not in found[0].msg
        assert checks.check_encryption_keys() == []  # a well-formed key: only E012 says it
    dedicated = {**settings.STREAMCHAT, "ENCRYPTION_KEYS": [Fernet.generate_key().decode()]}
    with override_settings(SECRET_KEY=secret, STREAMCHAT=dedicated):
        assert checks.check_encryption_key_is_not_secret_key() == []


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


@pytest.mark.parametrize(
    ("backend", "fires"),
    [
        ("django.contrib.staticfiles.storage.ManifestStaticFilesStorage", True),
        ("streamchat.storage.ManifestStaticFilesStorage", False),
        ("django.contrib.staticfiles.storage.StaticFilesStorage", False),  # names not hashed
    ],
)
def test_chk_w030_hashed_static_files_hash_module_imports(settings, backend, fires):
    storages = {**settings.STORAGES, "staticfiles": {"BACKEND": backend}}
    with override_settings(STORAGES=storages):
        found = ids(checks.check_js_module_imports_hashed())
    assert found == ({"streamchat.W030"} if fires else set())
