"""streamchat on a host's ASGI application, in one call.

``chat_application()`` returns the whole ``ProtocolTypeRouter`` a site needs: HTTP to the host's
Django app, the chat websocket behind the session login (``AuthMiddlewareStack``) and the
same-origin check (``origin.SameOriginValidator``), and the ``lifespan`` scope to
``streaming.shutdown.Lifespan`` (servers that speak lifespan, such as uvicorn, start the engine
with the server and drain it on SIGTERM; Daphne does both without it)::

    # mysite/asgi.py, after startproject's ``application = get_asgi_application()``
    from streamchat.asgi import chat_application
    application = chat_application(application)

Import order is safe either way: nothing here imports a model until the function runs, and it
runs only after Django is set up (by the host's ``get_asgi_application()``, or by its own call
when the host passes no app).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from channels.routing import ProtocolTypeRouter

# Where streamchat.routing mounts the consumer, and where the chat page connects (ChatView).
DEFAULT_WEBSOCKET_PATH = "/ws/streamchat/"

ASGIApp = Any  # an ASGI 3 callable: (scope, receive, send) -> awaitable


def chat_application(
    django_asgi_app: ASGIApp | None = None, *, websocket_path: str = DEFAULT_WEBSOCKET_PATH
) -> ProtocolTypeRouter:
    """The host's ASGI app with streamchat's websocket route, session auth, origin check and
    lifespan app.

    ``django_asgi_app``: the host's HTTP app, usually ``get_asgi_application()`` (wrapped in any
    middleware of its own); None calls ``get_asgi_application()`` here, which sets Django up.
    ``websocket_path``: where the chat websocket is mounted; a path other than the default also
    needs a ``ChatView`` subclass with the same ``websocket_path`` (docs/ui.md), since the page
    is what connects to it. ``streamchat.W015``–``W017`` recognise the stack returned.
    """
    if django_asgi_app is None:
        from django.core.asgi import get_asgi_application

        django_asgi_app = get_asgi_application()
    # Only now: the consumer imports models, which needs the app registry that the line above (or
    # the host's own get_asgi_application()) has filled.
    from channels.auth import AuthMiddlewareStack
    from channels.routing import ProtocolTypeRouter, URLRouter

    from .origin import SameOriginValidator
    from .routing import websocket_urlpatterns
    from .streaming.shutdown import Lifespan

    routes = websocket_urlpatterns
    if websocket_path != DEFAULT_WEBSOCKET_PATH:
        from django.urls import path

        from .consumers import ChatConsumer

        # Channels matches routes against the path without its leading slash.
        route = websocket_path.lstrip("/")
        routes = [path(route, ChatConsumer.as_asgi(), name="streamchat-websocket")]
    return ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(routes))),
            "lifespan": Lifespan(),
        }
    )
