"""ASGI entry point: HTTP through Django, websockets through streamchat's routes."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchat_site.settings")
# Django must be set up before anything imports models (the consumers do).
django_asgi_app = get_asgi_application()

from django.conf import settings  # noqa: E402

if settings.DEBUG:
    # Like runserver: static files from the apps, so `make run` (Daphne) shows styled pages.
    # In production, collectstatic and let the proxy (or ServeStatic) serve them.
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    django_asgi_app = ASGIStaticFilesHandler(django_asgi_app)

from streamchat.asgi import chat_application  # noqa: E402

# The websocket behind the session login and the same-origin check, and the lifespan scope for
# uvicorn (the engine starts with the server and drains on SIGTERM; Daphne does both without it).
application = chat_application(django_asgi_app)
