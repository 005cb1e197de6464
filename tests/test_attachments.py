"""Attachments (issue 19): uploads checked by content and limited before bodies are read, served to
their owner only, sent with websocket messages as OpenRouter's image and file parts to models that
read them (the simulator says what it saw), kept with branches, deleted with the conversation.
The demo's ASGI app, real sessions, the simulator over HTTP; nothing mocked."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.urls import reverse
from PIL import Image

from streamchat import catalog
from streamchat.models import Attachment, ChatModel, Conversation, Message

pytestmark = [pytest.mark.django_db(transaction=True)]

UPLOAD_URL = "/chat/api/attachments/"


@pytest.fixture(autouse=True)
def _storage(settings: Any, tmp_path: Path, simulator_settings: Any) -> Path:
    """A storage folder of the test's own, so "nothing stored" is a listing."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


def stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def png(width: int = 64, height: int = 48, **info: Any) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG", **info)
    return out.getvalue()


def jpeg_with_exif() -> bytes:
    image = Image.new("RGB", (40, 30), (10, 120, 200))
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x0131] = "GPS-Tagger 1.0"  # Software
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def pdf(pages: int = 2) -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=200, height=200)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def logged_in(user: Any) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get(reverse("streamchat:chat"))
    client.csrf = {"HTTP_X_CSRFTOKEN": client.cookies["csrftoken"].value}  # type: ignore[attr-defined]
    return client


def upload(client: Client, *files: tuple[str, bytes], **extra: Any) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = {"file": [SimpleUploadedFile(name, content) for name, content in files]}
    return client.post(UPLOAD_URL, data, **{**client.csrf, **extra})  # type: ignore[attr-defined]


def synced_models(*enabled: str) -> None:
    """ "Sync from OpenRouter" against the simulator, then enable ``enabled`` (the first is the
    default): their input modalities come from its /models."""
    catalog.fetch_and_sync()
    for index, model_id in enumerate(enabled):
        row = ChatModel.objects.get(model_id=model_id)
        row.enabled, row.is_default = True, index == 0
        row.save()


# -- upload, serve ---------------------------------------------------------------------------


def test_an_upload_is_checked_stored_and_served_to_its_owner_only(user, user_factory, _storage):
    client = logged_in(user)
    answer = upload(client, ("../../etc/photo.png", png()), ("report.pdf", pdf(2)))
    assert answer.status_code == 201, answer.content
    image, document = answer.json()["attachments"]
    assert image["content_type"] == "image/png" and (image["width"], image["height"]) == (64, 48)
    assert image["filename"] == "photo.png"  # a label: no directories
    assert document["content_type"] == "application/pdf" and document["pages"] == 2
    rows = list(Attachment.objects.order_by("id"))
    assert [r.owner_id for r in rows] == [user.pk, user.pk] and rows[0].message_id is None
    # Storage names are generated, never the user's.
    assert all(r.storage_name.startswith("streamchat/attachments/") for r in rows)
    assert "photo" not in rows[0].storage_name and len(stored_files(_storage)) == 2

    served = client.get(image["url"])
    assert served.status_code == 200 and served["Content-Type"] == "image/png"
    assert served["X-Content-Type-Options"] == "nosniff"
    assert served["Content-Disposition"].startswith("inline")
    assert "sandbox" in served["Content-Security-Policy"]
    assert "default-src 'none'" in served["Content-Security-Policy"]
    assert Image.open(io.BytesIO(served.content)).size == (64, 48)
    served_pdf = client.get(document["url"])
    assert served_pdf["Content-Disposition"].startswith("attachment")
    assert served_pdf.content.startswith(b"%PDF-")

    # Another user's id answers exactly like a missing one.
    other = logged_in(user_factory())
    theirs = other.get(image["url"])
    missing = other.get(reverse("streamchat:api-attachment", args=[10**9]))
    assert theirs.status_code == missing.status_code == 404
    assert (
        theirs.json() == missing.json() == {"code": "not_found", "message": "No such attachment."}
    )
    assert other.delete(image["url"], **other.csrf).status_code == 404
    # The owner removes an unsent one (the page's remove button): row and file go.
    assert client.delete(image["url"], **client.csrf).status_code == 204
    assert Attachment.objects.count() == 1 and len(stored_files(_storage)) == 1


def test_images_are_re_encoded_without_their_metadata(user):
    answer = upload(logged_in(user), ("cam.jpg", jpeg_with_exif()))
    assert answer.status_code == 201
    row = Attachment.objects.get()
    data = (Path(_media()) / row.storage_name).read_bytes()
    assert b"SecretCam" not in data and b"GPS-Tagger" not in data
    assert not Image.open(io.BytesIO(data)).getexif()
    assert row.sha256 and row.size == len(data)


def _media() -> str:
    from django.conf import settings

    return str(settings.MEDIA_ROOT)


def test_uploads_need_a_session_and_a_csrf_token(user):
    anonymous = Client(enforce_csrf_checks=True).post(UPLOAD_URL, {"file": io.BytesIO(png())})
    assert anonymous.status_code == 401
    client = logged_in(user)
    no_token = client.post(UPLOAD_URL, {"file": io.BytesIO(png())})
    assert no_token.status_code == 403 and no_token.json()["code"] == "csrf_failed"
    assert not Attachment.objects.exists()


@pytest.mark.parametrize(
    ("name", "content", "code"),
    [
        (
            "evil.svg",
            b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"></svg>',
            "attachment_type",
        ),
        ("image.png", b"<!doctype html><script>window.__pwned=1</script>", "attachment_type"),
        ("cut.png", png()[:60], "attachment_type"),  # the header of a PNG, not a PNG
        ("fake.pdf", b"%PDF-1.7\nnot really a PDF", "attachment_type"),
        ("big.png", png(900, 900) + b"\0" * 300_000, "attachment_too_large"),
    ],
)
def test_refused_uploads_say_why_and_store_nothing(user, settings, _storage, name, content, code):
    settings.STREAMCHAT = {**settings.STREAMCHAT, "ATTACHMENT_MAX_BYTES": 200_000}
    client = logged_in(user)
    answer = upload(client, ("fine.png", png()), (name, content))  # one bad file: none stored
    assert answer.status_code == (413 if code == "attachment_too_large" else 400), answer.content
    assert answer.json()["code"] == code and answer.json()["message"]
    assert not Attachment.objects.exists() and stored_files(_storage) == []


def test_too_many_files_and_too_many_pages(user, settings, _storage):
    settings.STREAMCHAT = {
        **settings.STREAMCHAT,
        "ATTACHMENTS_PER_MESSAGE": 2,
        "ATTACHMENT_MAX_PDF_PAGES": 3,
    }
    client = logged_in(user)
    answer = upload(client, *[(f"{n}.png", png()) for n in range(3)])
    assert answer.status_code == 400 and answer.json()["code"] == "too_many_attachments"
    long = upload(client, ("long.pdf", pdf(4)))
    assert long.status_code == 413 and long.json()["code"] == "attachment_too_large"
    assert not Attachment.objects.exists() and stored_files(_storage) == []


def test_a_declared_length_above_the_limit_is_refused_before_the_body_is_read(user, settings):
    settings.STREAMCHAT = {**settings.STREAMCHAT, "ATTACHMENT_MAX_BYTES": 100_000}
    client = logged_in(user)
    # The body is small, the declared length is not: the view must not read it to refuse.
    answer = upload(client, ("a.png", png()), CONTENT_LENGTH=str(50 * 1024 * 1024))
    assert answer.status_code == 413 and answer.json()["code"] == "attachment_too_large"
    # A declared length shorter than the body: only that much is read, and it is not a whole
    # multipart body.
    cut = upload(client, ("a.png", png()), CONTENT_LENGTH="120")
    assert cut.status_code == 400 and cut.json()["field"] == "file"
    assert not Attachment.objects.exists()


# -- the ASGI guard: before Django reads (and spools) a body ----------------------------------


class Body:
    """An ASGI receive() handing out a body in chunks, counting what the app took."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.taken = 0

    async def __call__(self) -> dict[str, Any]:
        if self.taken >= len(self.chunks):
            await asyncio.Event().wait()  # the client stays (Django listens for a disconnect)
        chunk = self.chunks[self.taken]
        self.taken += 1
        return {"type": "http.request", "body": chunk, "more_body": self.taken < len(self.chunks)}


async def asgi_post(path: str, headers: list[tuple[bytes, bytes]], body: Body) -> dict[str, Any]:
    from orchat_site.asgi import application

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    await application(scope, body, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return {"status": start["status"], "json": json.loads(content) if content else None}


async def test_the_asgi_guard_refuses_large_bodies_before_django_reads_them(settings):
    settings.STREAMCHAT = {**settings.STREAMCHAT, "ATTACHMENT_MAX_BYTES": 10_000}
    chunk = b"x" * 16 * 1024
    limit = 10_000 * settings.STREAMCHAT.get("ATTACHMENTS_PER_MESSAGE", 5) + 64 * 1024
    # Declared too large: answered before a single chunk is taken.
    declared = Body([chunk] * 100)
    answer = await asgi_post(
        UPLOAD_URL, [(b"content-length", str(100 * len(chunk)).encode())], declared
    )
    assert answer["status"] == 413 and answer["json"]["code"] == "attachment_too_large"
    assert declared.taken == 0
    # No length (chunked), or a lying one: refused at the chunk that passes the limit.
    for headers in ([], [(b"content-length", b"100")]):
        streamed = Body([chunk] * 100)
        answer = await asgi_post(UPLOAD_URL, headers, streamed)
        assert answer["status"] == 413 and answer["json"]["code"] == "attachment_too_large"
        assert streamed.taken == limit // len(chunk) + 1 < 100
    # Other paths are not the guard's business.
    other = Body([chunk] * 3)
    answer = await asgi_post("/chat/api/conversations/new/", [], other)
    assert answer["status"] == 401 and other.taken == 3
    assert not await sync_to_async(Attachment.objects.exists)()


# -- sending -------------------------------------------------------------------------------


async def test_an_image_sent_over_the_websocket_reaches_a_model_that_reads_it(
    user, chat_socket, simulator, _storage
):
    await sync_to_async(synced_models)("openai/gpt-4o-mini", "meta-llama/llama-3.1-8b-instruct")
    client = await sync_to_async(logged_in)(user)
    uploaded = await sync_to_async(upload)(client, ("shot.png", png()), ("doc.pdf", pdf(2)))
    ids = [a["id"] for a in uploaded.json()["attachments"]]
    socket = await chat_socket(user)
    await socket.send(
        {"type": "send", "client_id": "a-1", "content": "What is this?", "attachments": ids}
    )
    ack = await socket.recv_until("ack")
    text, finished = await socket.reply(ack["reply"])
    assert finished["status"] == "complete"
    assert text.startswith("I see 1 image (PNG, 64×48) and 1 PDF (2 pages).")
    sent = simulator.chat_requests[-1].json
    parts = sent["messages"][-1]["content"]
    assert parts[0] == {"type": "text", "text": "What is this?"}
    assert parts[1]["type"] == "image_url"
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[2]["type"] == "file" and parts[2]["file"]["filename"] == "doc.pdf"
    assert parts[2]["file"]["file_data"].startswith("data:application/pdf;base64,")
    assert sent["plugins"] == [{"id": "file-parser", "pdf": {"engine": "native"}}]
    # The reservation and the estimate count the image (255 tokens) and the pages (2 × 1500).
    assert finished["usage"]["prompt_tokens"] > 0

    rows = await sync_to_async(list)(Attachment.objects.order_by("id"))
    assert {r.message_id for r in rows} == {ack["message"]}
    tree = await sync_to_async(client.get)(f"/chat/api/conversations/{ack['conversation']}/")
    question = next(m for m in tree.json()["messages"] if m["id"] == ack["message"])
    assert [a["id"] for a in question["attachments"]] == ids
    assert question["attachments"][0]["url"] == f"/chat/api/attachments/{ids[0]}/"

    # A sent attachment cannot be sent again, nor removed on its own.
    await socket.send(
        {"type": "send", "client_id": "a-2", "content": "Again", "attachments": ids[:1]}
    )
    again = await socket.recv_until("error")
    assert again["code"] == "not_found" and again["client_id"] == "a-2"
    removed = await sync_to_async(client.delete)(f"/chat/api/attachments/{ids[0]}/", **client.csrf)
    assert removed.status_code == 400

    # Deleting the conversation deletes the rows and their files.
    deleted = await sync_to_async(client.delete)(
        f"/chat/api/conversations/{ack['conversation']}/", **client.csrf
    )
    assert deleted.status_code == 204
    assert not await sync_to_async(Attachment.objects.exists)()
    assert stored_files(_storage) == []


async def test_a_model_that_cannot_read_images_refuses_them(user, chat_socket, simulator):
    await sync_to_async(synced_models)("meta-llama/llama-3.1-8b-instruct")
    client = await sync_to_async(logged_in)(user)
    uploaded = await sync_to_async(upload)(client, ("shot.png", png()))
    image = uploaded.json()["attachments"][0]["id"]
    socket = await chat_socket(user)
    requests = len(simulator.chat_requests)
    await socket.send(
        {"type": "send", "client_id": "t-1", "content": "Look", "attachments": [image]}
    )
    refused = await socket.recv_until("error")
    assert refused["code"] == "model_cannot_read" and refused["field"] == "attachments"
    assert "llama" in refused["message"]
    assert len(simulator.chat_requests) == requests
    assert not await sync_to_async(Message.objects.exists)()
    # The upload stays unsent: a send to a model that reads images takes it.
    assert await sync_to_async(Attachment.objects.filter(message=None).count)() == 1


async def test_another_users_attachment_is_like_a_missing_one(user, user_factory, chat_socket):
    await sync_to_async(synced_models)("openai/gpt-4o-mini")
    other = await sync_to_async(user_factory)()
    theirs = await sync_to_async(upload)(await sync_to_async(logged_in)(other), ("a.png", png()))
    their_id = theirs.json()["attachments"][0]["id"]
    socket = await chat_socket(user)
    answers = []
    for attachment in (their_id, 10**9):
        await socket.send(
            {
                "type": "send",
                "client_id": f"x-{attachment}",
                "content": "Hi",
                "attachments": [attachment],
            }
        )
        error = await socket.recv_until("error")
        answers.append((error["code"], error["message"]))
    assert answers[0] == answers[1] == ("not_found", "No such attachment.")
    assert not await sync_to_async(Message.objects.exists)()
    row = await sync_to_async(Attachment.objects.get)(pk=their_id)
    assert row.message_id is None and row.owner_id == other.pk
    # Malformed lists are refused before any database work.
    await socket.send({"type": "send", "client_id": "x-bad", "content": "Hi", "attachments": ["1"]})
    assert (await socket.recv_until("error"))["field"] == "attachments"


async def test_branches_keep_their_attachments(user, chat_socket, simulator, _storage):
    await sync_to_async(synced_models)("openai/gpt-4o-mini")
    client = await sync_to_async(logged_in)(user)
    uploaded = await sync_to_async(upload)(client, ("shot.png", png()))
    image = uploaded.json()["attachments"][0]["id"]
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "b-1", "content": "Q", "attachments": [image]})
    ack = await socket.recv_until("ack")
    await socket.reply(ack["reply"])

    # Regenerate: the question's image is sent again.
    await socket.send({"type": "regenerate", "client_id": "b-2", "reply": ack["reply"]})
    regenerated = await socket.recv_until("ack")
    text, _ = await socket.reply(regenerated["reply"])
    assert text.startswith("I see 1 image (PNG, 64×48).")

    # Edit without naming attachments: the new version keeps the image (a row of its own, the
    # same file).
    await socket.send(
        {"type": "edit", "client_id": "b-3", "message": ack["message"], "content": "Q2"}
    )
    edited = await socket.recv_until("ack")
    text, _ = await socket.reply(edited["reply"])
    assert text.startswith("I see 1 image")
    copies = await sync_to_async(list)(Attachment.objects.filter(message_id=edited["message"]))
    original = await sync_to_async(Attachment.objects.get)(pk=image)
    assert len(copies) == 1 and copies[0].storage_name == original.storage_name
    assert len(stored_files(_storage)) == 1

    # Edit with an empty list: that version has none.
    await socket.send(
        {
            "type": "edit",
            "client_id": "b-4",
            "message": ack["message"],
            "content": "Q3",
            "attachments": [],
        }
    )
    bare = await socket.recv_until("ack")
    text, _ = await socket.reply(bare["reply"])
    assert not text.startswith("I see")
    assert isinstance(simulator.chat_requests[-1].json["messages"][-1]["content"], str)

    # Deleting the first version's row keeps the file the edit still uses; the conversation's
    # deletion removes it.
    await sync_to_async(Attachment.objects.filter(pk=image).delete)()
    assert len(stored_files(_storage)) == 1
    await sync_to_async(Conversation.objects.filter(pk=ack["conversation"]).delete)()
    assert stored_files(_storage) == []


def test_sync_stores_input_modalities(simulator):
    catalog.fetch_and_sync()
    reads = dict(ChatModel.objects.values_list("model_id", "input_modalities"))
    assert reads["openai/gpt-4o-mini"] == ["file", "image", "text"]
    assert reads["meta-llama/llama-3.1-8b-instruct"] == ["text"]
    assert reads["simulator/vision"] == ["image", "text"]
