"""What the session-authenticated HTTP front ends share (the JSON API in ``streamchat.views``,
Server-Sent Events in ``streamchat.http.sse``; the OpenAI-compatible API reads request bodies here
too): JSON errors, reading a JSON body, Django's CSRF check answered as JSON, and ``JsonView``.

The contract (docs/http.md): session authentication (401 ``not_authenticated`` rather than a login
redirect), CSRF on unsafe methods (403 ``csrf_failed``), and every error is
``{"code": ..., "message": ...}`` (plus ``field`` and ``retry_after`` where they apply) with the
status of its code in ``streamchat.exceptions.CODES``; a 429 also sends ``Retry-After``.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from ..conf import app_settings
from ..exceptions import ChatError, StreamchatError, http_status, unavailable

logger = logging.getLogger("streamchat.http")


def json_error(code: str, message: str, status: int | None = None, **extra: Any) -> JsonResponse:
    """``{"code", "message", **extra}`` with ``status`` (default: the code's, ``http_status``);
    ``Retry-After`` in whole seconds when ``extra`` has ``retry_after``."""
    response = JsonResponse(
        {"code": code, "message": message, **extra},
        status=status if status is not None else http_status(code),
    )
    retry_after = extra.get("retry_after")
    if retry_after is not None:
        response["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


def error_response(error: StreamchatError) -> JsonResponse:
    """A refused request as JSON, with the status of its code (``exceptions.CODES``)."""
    extra: dict[str, Any] = {}
    if error.field:
        extra["field"] = error.field
    if error.retry_after is not None:
        extra["retry_after"] = round(error.retry_after, 1)
    extra.update(error.details)
    return json_error(error.public_code, error.message, **extra)


def parse_json_body(request: HttpRequest, limit: int) -> dict[str, Any]:
    """The request's JSON object; ``ChatError`` ``message_too_large`` above ``limit`` bytes
    (413), ``bad_json`` (400) when it is not a JSON object."""
    too_large = ChatError(
        "message_too_large", _("Requests are limited to %(limit)s bytes.") % {"limit": limit}
    )
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    try:
        raw = request.body
    except RequestDataTooBig:
        raise too_large from None
    if len(raw) > limit:
        raise too_large
    try:
        body = json.loads(raw or b"null")
    except (ValueError, RecursionError):  # RecursionError: nested deeper than ~1000
        raise ChatError("bad_json", _("The request body is not JSON.")) from None
    if not isinstance(body, dict):
        raise ChatError("bad_json", _("The request body must be a JSON object."))
    return body


def read_json_body(request: HttpRequest, limit: int) -> dict[str, Any] | JsonResponse:
    """``parse_json_body``, or the JSON error response to answer."""
    try:
        return parse_json_body(request, limit)
    except ChatError as error:
        return error_response(error)


def csrf_passes(request: HttpRequest) -> bool:
    """Django's own CSRF check, run here so a failure answers JSON instead of the HTML 403 page."""

    def get_response(request: HttpRequest) -> HttpResponse:  # never called
        return HttpResponse()

    check = CsrfViewMiddleware(get_response)
    check.process_request(request)
    return check.process_view(request, lambda r: HttpResponse(), (), {}) is None


@method_decorator(csrf_exempt, name="dispatch")  # checked in dispatch, answered as JSON
class JsonView(View):
    """A session-authenticated JSON endpoint with JSON errors (see the module docstring)."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            if not request.user.is_authenticated:
                return json_error("not_authenticated", _("Log in to use the chat."))
            if request.method not in ("GET", "HEAD", "OPTIONS", "TRACE") and not csrf_passes(
                request
            ):
                return json_error("csrf_failed", _("CSRF verification failed: reload the page."))
            return super().dispatch(request, *args, **kwargs)
        except DatabaseError as error:  # a database blip: JSON 503 with Retry-After, not a 500
            logger.warning(
                "streamchat: %s %s refused: the database failed (%s)",
                request.method,
                request.path,
                error,
            )
            return error_response(unavailable())

    def http_method_not_allowed(
        self, request: HttpRequest, *args: Any, **kwargs: Any
    ) -> HttpResponse:
        response = json_error(
            "method_not_allowed",
            _("%(method)s is not allowed here.") % {"method": request.method},
        )
        response["Allow"] = ", ".join(m.upper() for m in self._allowed_methods())
        return response

    def read_json(self, request: HttpRequest) -> dict[str, Any] | JsonResponse:
        """The body as a JSON object (at most ``MAX_FRAME_BYTES``), or the error to answer."""
        return read_json_body(request, app_settings.MAX_FRAME_BYTES)
