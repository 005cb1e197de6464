"""Test settings: the demo's settings, with fast password hashing and a quiet test database."""

from orchat_site.settings import *  # noqa: F401,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tests choose their channel layer explicitly (Redis tests override this).
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
STREAMCHAT = {**STREAMCHAT, "API_KEY": None}  # noqa: F405
