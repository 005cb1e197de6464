"""The demo's channel layer: Redis when REDIS_URL is set, carrying messages between processes."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from channels.layers import channel_layers
from django.test import override_settings

ROOT = Path(__file__).resolve().parent.parent


def demo_settings(**env: str):
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import orchat_site.settings as module

        return importlib.reload(module)
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.mark.once
def test_redis_url_selects_the_redis_layer_without_socket_timeout():
    module = demo_settings(REDIS_URL="redis://127.0.0.1:6379/3")
    layer = module.CHANNEL_LAYERS["default"]
    assert layer["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    # redis-py 8's 5 s default would tear down idle consumers (channels_redis#422).
    assert layer["CONFIG"]["hosts"][0]["socket_timeout"] is None


@pytest.mark.once
def test_no_redis_url_means_the_in_memory_layer():
    module = demo_settings(REDIS_URL="")
    assert module.CHANNEL_LAYERS["default"]["BACKEND"] == "channels.layers.InMemoryChannelLayer"


@pytest.mark.once
async def test_redis_layer_carries_a_message_from_another_process(redis_url):
    config = demo_settings(REDIS_URL=redis_url).CHANNEL_LAYERS
    with override_settings(CHANNEL_LAYERS=config):
        channel_layers.backends.clear()
        layer = channel_layers["default"]
        channel = await layer.new_channel()
        await layer.group_add("streamchat-test", channel)
        sender = (
            "import asyncio, os, django;"
            "os.environ['DJANGO_SETTINGS_MODULE']='orchat_site.settings'; django.setup();"
            "from channels.layers import get_channel_layer;"
            "asyncio.run(get_channel_layer().group_send("
            "'streamchat-test', {'type': 'hello', 'n': 7}))"
        )
        env = {**os.environ, "REDIS_URL": redis_url}
        subprocess.run([sys.executable, "-c", sender], cwd=ROOT, env=env, check=True, timeout=60)
        message = await layer.receive(channel)
        assert message == {"type": "hello", "n": 7}
        await layer.flush()
    channel_layers.backends.clear()
