"""Websocket routes for host projects: include ``websocket_urlpatterns`` in your ASGI URLRouter."""

from __future__ import annotations

from django.urls import URLPattern, path

from .consumers import ChatConsumer

websocket_urlpatterns: list[URLPattern] = [
    path("ws/streamchat/", ChatConsumer.as_asgi(), name="streamchat-websocket"),
]
