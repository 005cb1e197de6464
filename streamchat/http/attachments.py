"""Attachments over HTTP (docs/http.md): ``POST api/attachments/`` uploads (multipart, one or more
``file`` fields), ``GET api/attachments/<id>/`` serves one to its owner, ``DELETE`` removes one
that was not sent yet.

Session JSON API views (``JsonView``: session auth, CSRF, JSON errors). Limits hold before a whole
body is read: a ``Content-Length`` above what the limits allow is refused before any of the body
is parsed, and ``LimitedUploadHandler`` stops reading at the first byte past
``ATTACHMENT_MAX_BYTES`` (``streamchat.asgi``'s ``UploadLimit`` does the same, before Django
buffers an ASGI body). Every file is checked by its content before any is stored: a refused
request stores nothing.

Served files are the stored (re-encoded) bytes, with their checked type, ``nosniff``, an
``inline`` (images) or ``attachment`` (PDFs) disposition and a CSP that lets nothing run. Another
user's id answers exactly like a missing one.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.http import content_disposition_header
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt

from .. import attachments
from ..exceptions import ChatError, not_found
from ..models import Attachment
from .responses import JsonView, error_response, json_error

# The served file can run nothing and embed nothing, even if a browser sniffed it as a page.
ATTACHMENT_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"


def attachment_json(attachment: Attachment) -> dict[str, Any]:
    return {
        "id": attachment.pk,
        "filename": attachment.filename,
        "content_type": attachment.content_type,
        "size": attachment.size,
        "width": attachment.width,
        "height": attachment.height,
        "pages": attachment.pages,
        "url": reverse("streamchat:api-attachment", args=[attachment.pk]),
    }


@method_decorator(csrf_exempt, name="dispatch")  # JsonView checks it, after the limits here
class AttachmentUploadView(JsonView):
    """POST multipart ``file`` fields (1 to ``ATTACHMENTS_PER_MESSAGE``): ``201`` with
    ``{"attachments": [...]}`` (unsent: reference their ids in the next send)."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method == "POST":
            # Before anything reads the body (the CSRF check reads a POST's form fields).
            declared = request.META.get("CONTENT_LENGTH") or ""
            if declared.isdigit() and int(declared) > attachments.body_limit():
                return error_response(attachments.too_large())
            handler = attachments.LimitedUploadHandler(request)
            request.upload_handlers = [handler]
            try:
                request.POST  # noqa: B018  (parsed here, within the limits)
            except MultiPartParserError:
                return json_error(
                    "invalid",
                    _("The upload is not a complete multipart/form-data body."),
                    field="file",
                )
            if handler.refusal is not None:
                return error_response(handler.refusal)
        return super().dispatch(request, *args, **kwargs)

    def post(self, request: HttpRequest) -> JsonResponse:
        files = request.FILES.getlist("file")
        if not files:
            return json_error(
                "invalid",
                _("Send the files as multipart/form-data fields named file."),
                field="file",
            )
        if len(files) > attachments.app_settings.ATTACHMENTS_PER_MESSAGE:
            return error_response(attachments.too_many())
        try:
            checked = [
                attachments.check(upload.read(), upload.name or "", where="file")
                for upload in files
            ]
        except ChatError as error:
            return error_response(error)
        rows = attachments.store(request.user.pk, checked)
        return JsonResponse({"attachments": [attachment_json(row) for row in rows]}, status=201)


class AttachmentView(JsonView):
    """GET: the file, to its owner only. DELETE: an attachment not sent yet (``204``)."""

    def _owned(self, request: HttpRequest, pk: int) -> Attachment | None:
        return Attachment.objects.filter(pk=pk, owner_id=request.user.pk).first()

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        attachment = self._owned(request, pk)
        if attachment is None:
            return error_response(not_found("attachment"))
        try:
            data = attachments.read(attachment)
        except OSError:  # the row outlived its file (storage trouble): as if missing
            return error_response(not_found("attachment"))
        response = HttpResponse(data, content_type=attachment.content_type)
        response["Content-Length"] = str(len(data))
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Disposition"] = (
            content_disposition_header(
                as_attachment=not attachment.is_image, filename=attachment.filename or "attachment"
            )
            or "attachment"
        )
        response["Content-Security-Policy"] = ATTACHMENT_CSP
        response["Cross-Origin-Resource-Policy"] = "same-origin"
        # A user's file: the browser may keep it (ids never change content), no shared cache.
        response["Cache-Control"] = "private, max-age=86400"
        return response

    def delete(self, request: HttpRequest, pk: int) -> HttpResponse:
        attachment = self._owned(request, pk)
        if attachment is None:
            return error_response(not_found("attachment"))
        if attachment.message_id is not None:
            return json_error(
                "invalid",
                _("A sent attachment stays with its message: delete the conversation instead."),
            )
        attachment.delete()  # its file too, once the row is gone
        return HttpResponse(status=204)
