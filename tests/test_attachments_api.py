"""Images and PDFs through the OpenAI-compatible API (issue 19): the ``openai`` SDK against a live
Daphne, a personal token, the simulator upstream (no mocks). Data URLs are checked like uploads
and sent re-encoded; https URLs are passed on, never fetched; bad parts are a 400 naming them."""

from __future__ import annotations

import base64
import io
from typing import Any

import openai
import pytest
from PIL import Image

from streamchat.models import ChatModel, Usage
from tests.http_helpers import personal_token

pytestmark = [pytest.mark.django_db(transaction=True)]


def data_url(content_type: str, data: bytes) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


def png(width: int = 64, height: int = 48) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (0, 128, 0)).save(out, "PNG")
    return out.getvalue()


def pdf(pages: int) -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=100, height=100)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.fixture
def sdk(http_server: Any, user: Any) -> openai.OpenAI:
    ChatModel.objects.create(
        model_id="openai/gpt-4o-mini",
        enabled=True,
        is_default=True,
        input_modalities=["text", "image", "file"],
    )
    ChatModel.objects.create(
        model_id="meta-llama/llama-3.1-8b-instruct", enabled=True, input_modalities=["text"]
    )
    return openai.OpenAI(
        base_url=f"{http_server.url}/chat/v1", api_key=personal_token(user), max_retries=0
    )


def ask(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, *parts]}]


def test_the_sdk_sends_an_image_and_a_pdf_as_data_urls(sdk, simulator):
    stream = sdk.chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=ask(
            {"type": "image_url", "image_url": {"url": data_url("image/png", png())}},
            {
                "type": "file",
                "file": {"filename": "a.pdf", "file_data": data_url("application/pdf", pdf(3))},
            },
        ),
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.startswith("I see 1 image (PNG, 64×48) and 1 PDF (3 pages).")
    sent = simulator.chat_requests[-1].json
    image, document = sent["messages"][-1]["content"][1:]
    assert image["image_url"]["url"].startswith("data:image/png;base64,")
    assert document == {
        "type": "file",
        "file": {"filename": "a.pdf", "file_data": document["file"]["file_data"]},
    }
    assert sent["plugins"] == [{"id": "file-parser", "pdf": {"engine": "native"}}]
    assert Usage.objects.get().prompt_tokens > 0


def test_https_urls_are_passed_on_unfetched(sdk, simulator):
    url = "https://images.example/cat.png"
    completion = sdk.chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=ask({"type": "image_url", "image_url": {"url": url, "detail": "low"}}),
    )
    assert completion.choices[0].message.content.startswith("I see 1 image (a URL).")
    part = simulator.chat_requests[-1].json["messages"][-1]["content"][1]
    assert part == {"type": "image_url", "image_url": {"url": url, "detail": "low"}}


@pytest.mark.parametrize(
    ("part", "code", "status"),
    [
        (
            {
                "type": "image_url",
                "image_url": {"url": data_url("image/png", b"<svg onload=alert(1)>")},
            },
            "attachment_type",
            400,
        ),
        (
            {
                "type": "image_url",
                "image_url": {"url": data_url("image/png", b"<html><script>1</script>")},
            },
            "attachment_type",
            400,
        ),
        (
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}},
            "attachment_type",
            400,
        ),
        (
            {"type": "image_url", "image_url": {"url": "http://plain.example/x.png"}},
            "attachment_type",
            400,
        ),
        (
            {
                "type": "file",
                "file": {"filename": "x.pdf", "file_data": data_url("application/pdf", png())},
            },
            "attachment_type",
            400,
        ),
        ({"type": "file", "file": {"file_id": "file-123"}}, "invalid", 400),
        ({"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}, "invalid", 400),
    ],
)
def test_bad_parts_are_a_400_naming_the_part(sdk, simulator, part, code, status):
    requests = len(simulator.chat_requests)
    with pytest.raises(openai.APIStatusError) as refused:
        sdk.chat.completions.create(model="openai/gpt-4o-mini", messages=ask(part))
    assert refused.value.status_code == status
    assert refused.value.body["code"] == code
    assert refused.value.body["param"] == "messages[0].content[1]"
    assert len(simulator.chat_requests) == requests and not Usage.objects.exists()


def test_too_many_parts_and_a_model_that_cannot_read_them(sdk, simulator):
    image = {"type": "image_url", "image_url": {"url": data_url("image/png", png())}}
    with pytest.raises(openai.BadRequestError) as many:
        sdk.chat.completions.create(model="openai/gpt-4o-mini", messages=ask(*[image] * 6))
    assert many.value.body["code"] == "too_many_attachments"
    with pytest.raises(openai.BadRequestError) as blind:
        sdk.chat.completions.create(model="meta-llama/llama-3.1-8b-instruct", messages=ask(image))
    assert blind.value.body["code"] == "model_cannot_read"
    assert blind.value.body["param"] == "messages[0].content[1]"
    assert not Usage.objects.exists()
