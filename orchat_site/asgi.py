"""ASGI entry point: HTTP through Django, websockets through streamchat's routes."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchat_site.settings")
# Django must be set up before anything imports models (the consumers do).
django_asgi_app = get_asgi_application()

from django.conf import settings  # noqa: E402

if settings.DEBUG:
    # Like runserver: static files from the apps, so `make run` (Daphne) shows styled pages.
    # In production, collectstatic and let the proxy (or WhiteNoise) serve them.
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    django_asgi_app = ASGIStaticFilesHandler(django_asgi_app)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from streamchat.origin import SameOriginValidator  # noqa: E402
from streamchat.routing import websocket_urlpatterns  # noqa: E402
from streamchat.streaming.shutdown import Lifespan  # noqa: E402

application = ProtocolTypeRouter(
    {
        # uvicorn and other lifespan servers: the engine starts with the server and drains on
        # SIGTERM (Daphne does both without it).
        "lifespan": Lifespan(),
        "http": django_asgi_app,
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
