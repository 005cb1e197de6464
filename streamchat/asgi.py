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
            "http": UploadLimit(django_asgi_app),
            "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(routes))),
            "lifespan": Lifespan(),
        }
    )


class UploadLimit:
    """ASGI middleware: the body of an attachment upload (``POST api/attachments/``) is refused
    with 413 ``attachment_too_large`` as soon as it passes what the limits allow
    (``attachments.body_limit()``): at once for a ``Content-Length`` above it, or at the chunk
    that passes it for a body sent without one (chunked) — before Django's ASGI handler, which
    spools a whole body before any view runs. Every other request passes untouched.

    (A server that itself reads whole bodies before the app, such as Daphne, still receives
    them: put a proxy limit in front, ``client_max_body_size`` in deploy/nginx.conf.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        if scope["type"] != "http" or scope.get("method") != "POST" or not _is_upload(scope):
            return await self.app(scope, receive, send)
        from .attachments import body_limit

        limit = body_limit()
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await _refuse(send)
        held: list[Any] = []
        size = 0
        while True:
            message = await receive()
            held.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                return await _refuse(send)
            if not message.get("more_body", False):
                break

        async def replay() -> Any:
            return held.pop(0) if held else await receive()

        return await self.app(scope, replay, send)


def _is_upload(scope: Any) -> bool:
    from django.urls import Resolver404, resolve

    from .http.attachments import AttachmentUploadView

    path = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    try:
        match = resolve(path)
    except Resolver404:
        return False
    return getattr(match.func, "view_class", None) is AttachmentUploadView


async def _refuse(send: Any) -> None:
    import json

    from .attachments import too_large

    error = too_large()
    body = json.dumps({"code": error.code, "message": error.message, "field": error.field})
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body.encode())).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})
