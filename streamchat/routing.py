"""Websocket routes for host projects: include ``websocket_urlpatterns`` in your ASGI URLRouter."""

from __future__ import annotations

from django.urls import URLPattern

websocket_urlpatterns: list[URLPattern] = []
