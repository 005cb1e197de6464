"""Attachments: images and PDFs checked by their content, stored with Django's storage API, and
turned into OpenRouter's content parts.

Guarantees:

- A type is recognised by its first bytes, never by the file name or the declared type: PNG,
  JPEG, GIF, WebP and PDF (``ATTACHMENT_TYPES`` narrows them). SVG, HTML and anything else is
  ``attachment_type``. Images are then opened by Pillow restricted to the recognised format,
  verified, and re-encoded (PNG, JPEG or WebP; GIF becomes PNG) from their pixels only: EXIF, GPS,
  comments and colour profiles are left behind, and what is stored is what Pillow wrote. A PDF
  needs the ``%PDF-`` header and, with pypdf installed, must open with 1 to
  ``ATTACHMENT_MAX_PDF_PAGES`` pages and no encryption.
- Nothing is stored for a refused file: every file of a request is checked before the first is
  saved. Storage names are generated (``streamchat/attachments/<random hex>.<ext>``); the user's
  file name is kept only as a label.
- ``ATTACHMENT_MAX_BYTES`` is enforced while the body is read (``LimitedUploadHandler``, and the
  ASGI guard ``UploadLimit`` before Django reads it), never after reading a whole body.

Everything here is sync (Pillow, pypdf and storage reads block): async callers go through
``database_sync_to_async`` or the engine's ``streaming.db.run``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import secrets
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import Storage, default_storage, storages
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.db import transaction
from django.utils.translation import gettext as _

from .conf import app_settings
from .exceptions import ChatError

IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")
PDF = "application/pdf"
# Pillow's format name for each type we accept, and what an image is re-encoded as.
_PILLOW_FORMAT = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
}
_STORED_AS = {
    "image/png": "image/png",
    "image/jpeg": "image/jpeg",
    "image/webp": "image/webp",
    "image/gif": "image/png",
}
_EXTENSION = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", PDF: "pdf"}
# A decompression bomb guard below Pillow's own (89 M pixels warns, twice that fails).
MAX_PIXELS = 40_000_000
# Prompt-token estimates (docs/http.md), used to trim the context and to reserve budgets before
# OpenRouter reports the real count: an image costs what OpenAI's high-detail rule says (85 plus
# 170 per 512-pixel tile, after fitting it in 2048 × 2048 and its short side in 768); a PDF page
# costs PDF_PAGE_TOKENS (a dense page of text).
IMAGE_BASE_TOKENS = 85
IMAGE_TILE_TOKENS = 170
IMAGE_MAX_TOKENS = IMAGE_BASE_TOKENS + IMAGE_TILE_TOKENS * 8  # 2048 × 768, the most tiles
PDF_PAGE_TOKENS = 1500
PDF_ENGINES_FOR_ANY_MODEL = frozenset({"cloudflare-ai", "mistral-ocr", "pdf-text"})
STORAGE_PREFIX = "streamchat/attachments/"


def storage() -> Storage:
    """The storage attachments live in (``ATTACHMENT_STORAGE``: an alias of ``STORAGES``)."""
    alias = app_settings.ATTACHMENT_STORAGE
    return storages[alias] if alias else default_storage


def kind_name(content_type: str) -> str:
    return "PDF" if content_type == PDF else content_type.partition("/")[2].upper()


# -- checking ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checked:
    """A file that passed every check, as it will be stored."""

    data: bytes
    content_type: str
    filename: str
    width: int | None = None
    height: int | None = None
    pages: int | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def sniff(data: bytes) -> str | None:
    """The type the first bytes say, among those streamchat can accept; None for anything else
    (SVG and HTML included)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"%PDF-"):
        return PDF
    return None


def too_large(limit: int | None = None) -> ChatError:
    limit = limit or app_settings.ATTACHMENT_MAX_BYTES
    return ChatError(
        "attachment_too_large",
        _("An attachment may be at most %(size)s.") % {"size": _human_size(limit)},
        field="file",
    )


def too_many(limit: int | None = None) -> ChatError:
    limit = limit or app_settings.ATTACHMENTS_PER_MESSAGE
    return ChatError(
        "too_many_attachments",
        _("A message may have at most %(count)s attachments.") % {"count": limit},
        field="attachments",
    )


def _human_size(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):g} MiB"
    if size >= 1024:
        return f"{size / 1024:g} KiB"
    return f"{size} bytes"


def _refused_type(where: str = "file") -> ChatError:
    allowed = ", ".join(kind_name(t) for t in app_settings.ATTACHMENT_TYPES)
    return ChatError(
        "attachment_type",
        _("%(where)s is not a file type the chat accepts (by its content): %(allowed)s.")
        % {"where": where, "allowed": allowed},
        field=where,
    )


def check(data: bytes, filename: str = "", *, where: str = "file") -> Checked:
    """``data`` as it will be stored, or a ``ChatError`` (``attachment_too_large``,
    ``attachment_type``) naming ``where``."""
    if len(data) > app_settings.ATTACHMENT_MAX_BYTES:
        error = too_large()
        error.field = where
        raise error
    content_type = sniff(data)
    if content_type is None or content_type not in app_settings.ATTACHMENT_TYPES:
        raise _refused_type(where)
    name = _label(filename, content_type)
    if content_type == PDF:
        return Checked(data, PDF, name, pages=_pdf_pages(data, where))
    return _reencoded(data, content_type, name, where)


def _label(filename: str, content_type: str) -> str:
    """The user's file name as a label: no directories, no control characters, the right
    extension."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if c.isprintable() and c not in '"<>')[:150].strip(". ")
    stem = base.rsplit(".", 1)[0] if "." in base else base
    return f"{stem or 'attachment'}.{_EXTENSION[_STORED_AS.get(content_type, content_type)]}"


def _reencoded(data: bytes, content_type: str, name: str, where: str) -> Checked:
    from PIL import Image, ImageOps

    fmt = _PILLOW_FORMAT[content_type]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[fmt]) as probe:
                if probe.width * probe.height > MAX_PIXELS or not probe.width or not probe.height:
                    raise ChatError(
                        "attachment_too_large",
                        _("An image may have at most %(pixels)s million pixels.")
                        % {"pixels": MAX_PIXELS // 1_000_000},
                        field=where,
                    )
                probe.verify()  # the whole file, structurally; the image must be opened again
            with Image.open(io.BytesIO(data), formats=[fmt]) as image:
                image.load()
                upright = ImageOps.exif_transpose(image)  # metadata goes; its rotation stays
    except ChatError:
        raise
    except Exception:  # Pillow raises many kinds for a broken file: all mean "not an image"
        raise _refused_type(where) from None
    stored_type = _STORED_AS[content_type]
    out_format = _PILLOW_FORMAT[stored_type]
    # A fresh image of the pixels alone: no EXIF, XMP, comments or ICC profile is written.
    mode = upright.mode
    if out_format == "JPEG":
        pixels = upright.convert("RGB") if mode not in ("RGB", "L") else upright
    elif mode in ("RGB", "RGBA", "L", "LA") or (out_format == "PNG" and mode in ("P", "1", "I")):
        pixels = upright
    else:
        has_alpha = "A" in mode or "transparency" in upright.info
        pixels = upright.convert("RGBA" if has_alpha else "RGB")
    clean = Image.new(pixels.mode, pixels.size)
    clean.paste(pixels)
    if pixels.mode == "P":
        clean.putpalette(pixels.getpalette() or [])
    out = io.BytesIO()
    options: dict[str, Any] = {"quality": 90} if out_format in ("JPEG", "WEBP") else {}
    clean.save(out, format=out_format, **options)
    return Checked(out.getvalue(), stored_type, name, width=clean.width, height=clean.height)


def _pdf_pages(data: bytes, where: str) -> int | None:
    """The page count of a PDF (None without pypdf: then the header and size are all that is
    checked); ``attachment_type`` for a PDF that does not open or is encrypted."""
    try:
        from pypdf import PdfReader
    except ImportError:  # optional: a host without pypdf gets the header and size check
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = PdfReader(io.BytesIO(data), strict=False)
            if reader.is_encrypted:
                raise ChatError(
                    "attachment_type",
                    _("%(where)s is an encrypted PDF, which models cannot read.")
                    % {"where": where},
                    field=where,
                )
            pages = len(reader.pages)
    except ChatError:
        raise
    except Exception:  # a broken PDF raises many kinds
        raise _refused_type(where) from None
    if pages < 1:
        raise _refused_type(where)
    if pages > app_settings.ATTACHMENT_MAX_PDF_PAGES:
        raise ChatError(
            "attachment_too_large",
            _("A PDF may have at most %(pages)s pages.")
            % {"pages": app_settings.ATTACHMENT_MAX_PDF_PAGES},
            field=where,
        )
    return pages


# -- storing -----------------------------------------------------------------------------------


def store(owner_id: Any, files: Sequence[Checked]) -> list[Any]:
    """Save checked files and their rows (unsent: no message yet). A failure deletes the files
    saved so far: nothing is left of a request that did not succeed."""
    from .models import Attachment

    target = storage()
    saved: list[str] = []
    try:
        rows = []
        for checked in files:
            ext = _EXTENSION[checked.content_type]
            name = target.save(
                f"{STORAGE_PREFIX}{secrets.token_hex(16)}.{ext}", ContentFile(checked.data)
            )
            saved.append(name)
            rows.append(
                Attachment(
                    owner_id=owner_id,
                    storage_name=name,
                    filename=checked.filename,
                    content_type=checked.content_type,
                    size=len(checked.data),
                    sha256=checked.sha256,
                    width=checked.width,
                    height=checked.height,
                    pages=checked.pages,
                )
            )
        with transaction.atomic():
            for row in rows:
                row.save()
        return rows
    except BaseException:
        for name in saved:
            target.delete(name)
        raise


def read(attachment: Any) -> bytes:
    with storage().open(attachment.storage_name, "rb") as handle:
        data: bytes = handle.read()
    return data


def delete_unused_file(storage_name: str) -> None:
    """Delete a stored file once no row names it (rows of edits share their original's file);
    run after the deleting transaction commits."""
    from .models import Attachment

    def delete() -> None:
        if not Attachment.objects.filter(storage_name=storage_name).exists():
            storage().delete(storage_name)

    transaction.on_commit(delete)


def file_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    """``post_delete`` receiver of Attachment."""
    if instance.storage_name:
        delete_unused_file(instance.storage_name)


# -- reading uploads within the limit ----------------------------------------------------------


class LimitedUploadHandler(FileUploadHandler):
    """Keeps each uploaded file in memory up to ``ATTACHMENT_MAX_BYTES`` and stops the upload at
    the first byte past it (or past ``ATTACHMENTS_PER_MESSAGE`` files): Django's parser reads the
    body in chunks, so a large body is never read whole. ``refusal`` says why it stopped."""

    def __init__(self, request: Any = None) -> None:
        super().__init__(request)
        self.limit = int(app_settings.ATTACHMENT_MAX_BYTES)
        self.max_files = int(app_settings.ATTACHMENTS_PER_MESSAGE)
        self.files = 0
        self.refusal: ChatError | None = None
        self.buffer = io.BytesIO()

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.files += 1
        if self.files > self.max_files:
            self.refusal = too_many()
            raise StopUpload(connection_reset=False)
        self.buffer = io.BytesIO()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        if start + len(raw_data) > self.limit:
            self.refusal = too_large()
            raise StopUpload(connection_reset=False)
        self.buffer.write(raw_data)
        return None

    def file_complete(self, file_size: int) -> Any:
        from django.core.files.uploadedfile import InMemoryUploadedFile

        self.buffer.seek(0)
        return InMemoryUploadedFile(
            self.buffer,
            self.field_name,
            self.file_name,
            self.content_type,
            file_size,
            self.charset,
            self.content_type_extra,
        )


def body_limit() -> int:
    """The largest upload request body: the files at their limit plus room for the multipart
    framing and a few form fields."""
    return (
        int(app_settings.ATTACHMENT_MAX_BYTES) * int(app_settings.ATTACHMENTS_PER_MESSAGE)
        + 64 * 1024
    )


# -- upstream ----------------------------------------------------------------------------------


def readable_by(content_type: str, modalities: Iterable[str]) -> bool:
    """Whether a model with these input modalities reads this type (PDFs: any model when
    OpenRouter parses them, ``PDF_ENGINE``)."""
    if content_type in IMAGE_TYPES:
        return "image" in modalities
    if content_type == PDF:
        return "file" in modalities or app_settings.PDF_ENGINE in PDF_ENGINES_FOR_ANY_MODEL
    return False


def cannot_read(content_type: str, model_id: str, where: str = "attachments") -> ChatError:
    what = _("images") if content_type in IMAGE_TYPES else _("PDFs")
    return ChatError(
        "model_cannot_read",
        _(
            "%(model)s does not read %(what)s: pick a model that does, or send the message without "
            "them."
        )
        % {"model": model_id, "what": what},
        field=where,
    )


def data_url(content_type: str, data: bytes) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


def part(content_type: str, url: str, filename: str = "") -> dict[str, Any]:
    """OpenRouter's content part for one attachment: ``image_url``, or a ``file`` for a PDF."""
    if content_type == PDF:
        return {"type": "file", "file": {"filename": filename or "document.pdf", "file_data": url}}
    return {"type": "image_url", "image_url": {"url": url}}


def plugins() -> list[dict[str, Any]]:
    """The ``plugins`` a request with PDF parts carries (OpenRouter's file-parser options)."""
    return [{"id": "file-parser", "pdf": {"engine": app_settings.PDF_ENGINE}}]


def image_tokens(width: int | None, height: int | None) -> int:
    """The documented per-image estimate (see ``IMAGE_TILE_TOKENS``); the largest when the size
    is unknown."""
    if not width or not height:
        return IMAGE_MAX_TOKENS
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return IMAGE_BASE_TOKENS + IMAGE_TILE_TOKENS * math.ceil(w / 512) * math.ceil(h / 512)


def tokens_of(content_type: str, width: int | None, height: int | None, pages: int | None) -> int:
    if content_type == PDF:
        return PDF_PAGE_TOKENS * (pages or 1)
    return image_tokens(width, height)


def decode_data_url(url: str, where: str) -> tuple[str, bytes]:
    """The declared type and the bytes of a ``data:…;base64,…`` URL; ``attachment_too_large``
    past ``ATTACHMENT_MAX_BYTES`` (judged before decoding), ``attachment_type`` when malformed."""
    head, sep, payload = url.partition(",")
    if not sep or not head.startswith("data:") or not head.endswith(";base64"):
        raise ChatError(
            "attachment_type",
            _("%(where)s must be a base64 data URL (data:<type>;base64,…) or an https URL.")
            % {"where": where},
            field=where,
        )
    if len(payload) * 3 // 4 > app_settings.ATTACHMENT_MAX_BYTES + 3:
        error = too_large()
        error.field = where
        raise error
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ChatError(
            "attachment_type", _("%(where)s is not valid base64.") % {"where": where}, field=where
        ) from None
    return head[5:-7], data
