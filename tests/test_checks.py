"""Each system check fires on a bad setting and stays quiet on a good one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import override_settings

from streamchat import checks

INMEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
REDIS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer"}}


def ids(messages):
    return {m.id for m in messages}


def test_e001_no_asgi_application():
    with override_settings(ASGI_APPLICATION=None):
        assert "streamchat.E001" in ids(checks.check_asgi_setup())
    assert "streamchat.E001" not in ids(checks.check_asgi_setup())


def test_e002_no_channel_layer():
    with override_settings(CHANNEL_LAYERS={}):
        assert "streamchat.E002" in ids(checks.check_asgi_setup())
    assert "streamchat.E002" not in ids(checks.check_asgi_setup())


def test_e003_channels_not_installed(settings):
    apps = [a for a in settings.INSTALLED_APPS if a != "channels"]
    with override_settings(INSTALLED_APPS=apps):
        assert "streamchat.E003" in ids(checks.check_asgi_setup())
    assert "streamchat.E003" not in ids(checks.check_asgi_setup())


def test_w002_daphne_not_installed(settings):
    apps = [a for a in settings.INSTALLED_APPS if a != "daphne"]
    with override_settings(INSTALLED_APPS=apps):
        assert "streamchat.W002" in ids(checks.check_asgi_setup())
    assert "streamchat.W002" not in ids(checks.check_asgi_setup())


def test_e004_unknown_streamchat_setting():
    with override_settings(STREAMCHAT={"BASE_ULR": "typo"}):
        found = [m for m in checks.check_asgi_setup() if m.id == "streamchat.E004"]
    assert found and "BASE_ULR" in found[0].msg
    with override_settings(STREAMCHAT={"BASE_URL": "http://x"}):
        assert "streamchat.E004" not in ids(checks.check_asgi_setup())


@pytest.mark.parametrize(
    ("debug", "layers", "fires"),
    [(False, INMEMORY, True), (True, INMEMORY, False), (False, REDIS, False)],
)
def test_w001_inmemory_layer_without_debug(debug, layers, fires):
    with override_settings(DEBUG=debug, CHANNEL_LAYERS=layers):
        assert ("streamchat.W001" in ids(checks.check_production_layer())) is fires


def test_the_demo_site_passes_its_own_checks():
    from django.core.checks import run_checks

    assert [m for m in run_checks() if m.id.startswith("streamchat.")] == []


@pytest.mark.once
def test_every_check_id_is_documented():
    source = Path(checks.__file__).read_text()
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for check_id in set(re.findall(r"streamchat\.[EW]\d{3}", source)):
        assert f"`{check_id}`" in readme, f"{check_id} is not documented in README.md"
