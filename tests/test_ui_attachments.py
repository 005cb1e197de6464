"""Attachments on the chat page (issue 19), in headless Chromium against Daphne and the simulator:
an image pasted, a file dropped, a PDF picked with the file button, each uploaded at once; one
removed before sending (its DELETE happens, nothing is sent); the send carries the rest and the
simulator's reply describes them; a reload shows them in the history, an edit's branch keeps them;
refused files (an SVG, a file above the limit, one too many) say why and attach nothing; a model
that cannot read images refuses the send, the files stay for another model. No console error
(a CSP violation is one) anywhere.

Screenshots at 1280×800 and 390×844 go to test-artifacts/.
"""

from __future__ import annotations

import io
from typing import Any

import pytest

from streamchat.models import Attachment, ChatModel, Message

pytestmark = [pytest.mark.browser, pytest.mark.once, pytest.mark.django_db(transaction=True)]

REPLY = ".sc-msg--assistant"
TRAY = "#sc-attachments"
CHIP = f"{TRAY} .sc-attachment"

# A PNG drawn on a canvas in the page, put in a DataTransfer, and pasted into the message box or
# dropped onto the thread, as the browser does for a screenshot or a file from the desktop.
GIVE_PNG = """async ([how, name, width, height]) => {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  context.fillStyle = "#c83232";
  context.fillRect(0, 0, width, height);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  const data = new DataTransfer();
  data.items.add(new File([blob], name, { type: "image/png" }));
  if (how === "paste") {
    const input = document.getElementById("sc-input");
    input.focus();
    const init = { clipboardData: data, bubbles: true, cancelable: true };
    input.dispatchEvent(new ClipboardEvent("paste", init));
    return;
  }
  const zone = document.getElementById("sc-messages");
  for (const type of ["dragenter", "dragover", "drop"]) {
    const init = { dataTransfer: data, bubbles: true, cancelable: true };
    zone.dispatchEvent(new DragEvent(type, init));
  }
}"""

# Whether every thumbnail in ``selector`` loaded (the served image, allowed by img-src 'self').
THUMBS_LOADED = """(selector) => {
  const all = Array.from(document.querySelectorAll(selector));
  return all.length > 0 && all.every((img) => img.complete && img.naturalWidth > 0);
}"""


def pdf(pages: int = 2) -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=200, height=200)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def png_bytes(width: int = 8, height: int = 8) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(out, "PNG")
    return out.getvalue()


def model(model_id: str, reads: list[str], *, default: bool = True) -> ChatModel:
    """An enabled model whose input modalities (as "Sync from OpenRouter" stores them) are
    ``reads``."""
    return ChatModel.objects.create(
        model_id=model_id, enabled=True, is_default=default, input_modalities=reads
    )


def give_png(page: Any, how: str, name: str, width: int = 64, height: int = 48) -> None:
    page.evaluate(GIVE_PNG, [how, name, width, height])


def chip(page: Any, name: str) -> Any:
    return page.locator(CHIP, has=page.locator(".sc-attachment-name", has_text=name))


def wait_ready(page: Any, name: str) -> Any:
    found = chip(page, name)
    found.and_(page.locator('[data-status="ready"]')).wait_for()
    return found


def wait_finished(page: Any, index: int = -1) -> Any:
    reply = page.locator(REPLY).nth(index)
    reply.and_(page.locator('[data-status="complete"]')).wait_for(timeout=15_000)
    return reply


def sent_frames(page: Any) -> list[dict]:
    return page.evaluate("() => window.__sent")


# Records the page's websocket frames, so a test can say what was (not) sent.
FRAME_PROBE = """
(function () {
  window.__sent = [];
  var send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    try { window.__sent.push(JSON.parse(data)); } catch (e) { /* not ours */ }
    return send.call(this, data);
  };
})();
"""


def assert_clean(events: Any, refusals: int = 0) -> None:
    """No script error, no CSP violation (reported on the console as an error), no dialog, no
    request elsewhere; the console's only errors are the ``refusals`` the test caused (Chromium
    logs each 4xx answer to a request)."""
    assert events.page_errors == [], events.page_errors
    answered = [e for e in events.console_errors if "the server responded with a status of 4" in e]
    assert len(answered) == refusals, events.console_errors
    assert [e for e in events.console_errors if e not in answered] == [], events.console_errors
    assert events.dialogs == [] and events.foreign_requests == []


def test_paste_drop_pick_remove_send_reload_and_edit(
    page: Any, login: Any, user: Any, simulator: Any, screenshot: Any, browser_events: Any
) -> None:
    model("openai/gpt-4o-mini", ["text", "image", "file"])
    page.add_init_script(FRAME_PROBE)
    page.set_viewport_size({"width": 1280, "height": 800})
    login(page, user)
    assert page.locator(TRAY).is_hidden()
    accept = page.get_attribute("#sc-file", "accept")
    assert accept is not None and "image/png" in accept and "application/pdf" in accept

    # Pasted, dropped, picked: each uploads at once and shows its thumbnail or PDF chip.
    give_png(page, "paste", "pasted.png", 64, 48)
    give_png(page, "drop", "dropped.png", 32, 32)
    page.set_input_files(
        "#sc-file", files=[{"name": "report.pdf", "mimeType": "application/pdf", "buffer": pdf(2)}]
    )
    pasted = wait_ready(page, "pasted.png")
    dropped = wait_ready(page, "dropped.png")
    report = wait_ready(page, "report.pdf")
    page.wait_for_function(THUMBS_LOADED, arg=f"{TRAY} img.sc-attachment-thumb:not([hidden])")
    assert pasted.locator(".sc-attachment-meta").inner_text().startswith("PNG · 64×48")
    assert "2 pages" in report.locator(".sc-attachment-meta").inner_text()
    assert report.locator(".sc-attachment-icon").is_visible()
    # The served URL, never a blob: (which the page's CSP would refuse).
    assert pasted.locator("img").get_attribute("src").startswith("/chat/api/attachments/")
    assert Attachment.objects.filter(owner=user, message=None).count() == 3
    screenshot(page, "tray-1280")

    # Removed from the keyboard before sending: its DELETE goes, the focus moves on to the next.
    remove = dropped.locator(".sc-attachment-remove")
    assert remove.get_attribute("aria-label") == "Remove dropped.png"
    dropped_id = int(dropped.get_attribute("data-id"))
    remove.focus()
    with page.expect_response(
        lambda r: r.request.method == "DELETE" and r.url.endswith(f"/attachments/{dropped_id}/")
    ) as deleted:
        page.keyboard.press("Enter")
    assert deleted.value.status == 204
    assert page.locator(CHIP).count() == 2
    assert page.evaluate("() => document.activeElement.getAttribute('aria-label')") == (
        "Remove report.pdf"
    )
    assert not Attachment.objects.filter(pk=dropped_id).exists()
    assert not Message.objects.exists() and not any(
        f.get("type") == "send" for f in sent_frames(page)
    )

    # The file button is in the Tab order right after the message box, and named.
    page.focus("#sc-input")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "sc-attach"
    assert page.get_attribute("#sc-attach", "aria-label") == "Attach images or PDFs"

    # Sent with the message: the reply describes them; the tray empties once acknowledged.
    page.fill("#sc-input", "What is in these?")
    page.press("#sc-input", "Enter")
    reply = wait_finished(page)
    assert (
        reply.locator(".sc-body")
        .inner_text()
        .startswith("I see 1 image (PNG, 64×48) and 1 PDF (2 pages).")
    )
    ids = sorted(Attachment.objects.filter(owner=user).values_list("pk", flat=True))
    sends = [f for f in sent_frames(page) if f.get("type") == "send"]
    assert len(sends) == 1 and sorted(sends[0]["attachments"]) == ids
    question = Message.objects.get(role="user")
    assert set(Attachment.objects.values_list("message_id", flat=True)) == {question.pk}
    page.locator(TRAY).wait_for(state="hidden")
    user_msg = page.locator(".sc-msg--user").last
    assert user_msg.locator(".sc-msg-attachments img").count() == 1
    assert user_msg.locator(".sc-msg-attachments .sc-attachment-name").inner_text() == "report.pdf"

    # After a reload: the thumbnail links to the full image, the PDF chip to its file.
    page.reload()
    wait_finished(page)
    gallery = page.locator(".sc-msg--user .sc-msg-attachments")
    page.wait_for_function(THUMBS_LOADED, arg=".sc-msg-attachments img")
    image_link = gallery.locator("a", has=page.locator("img"))
    assert image_link.get_attribute("href") == f"/chat/api/attachments/{ids[0]}/"
    assert image_link.locator("img").get_attribute("alt") == "pasted.png"
    pdf_link = gallery.locator("a[download]")
    assert pdf_link.get_attribute("href") == f"/chat/api/attachments/{ids[1]}/"
    screenshot(page, "history-1280")

    # Edit the question: the new branch keeps its attachments (the model sees them again).
    page.click(".sc-msg--user button[data-action=edit]")
    page.fill(".sc-edit textarea", "And now?")
    page.click(".sc-edit button.sc-primary")
    page.locator(".sc-msg--user .sc-sibling-count", has_text="2 / 2").wait_for()
    reply = wait_finished(page)
    assert reply.locator(".sc-body").inner_text().startswith("I see 1 image (PNG, 64×48) and 1 PDF")
    assert page.locator(".sc-msg--user .sc-msg-attachments .sc-attachment").count() == 2
    page.reload()
    page.locator(".sc-msg--user .sc-sibling-count", has_text="2 / 2").wait_for()
    assert page.locator(".sc-msg--user .sc-body").inner_text() == "And now?"
    page.wait_for_function(THUMBS_LOADED, arg=".sc-msg-attachments img")
    assert page.locator(".sc-msg--user .sc-msg-attachments .sc-attachment").count() == 2

    # A phone-sized window: the tray and the history still fit.
    page.set_viewport_size({"width": 390, "height": 844})
    give_png(page, "paste", "phone.png", 40, 30)
    wait_ready(page, "phone.png")
    page.wait_for_function(THUMBS_LOADED, arg=f"{TRAY} img.sc-attachment-thumb:not([hidden])")
    assert page.evaluate(
        "() => document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )
    screenshot(page, "tray-390")
    assert_clean(browser_events)


def test_refused_files_say_why_and_attach_nothing(
    page: Any, login: Any, user: Any, simulator: Any, screenshot: Any, browser_events: Any
) -> None:
    model("openai/gpt-4o-mini", ["text", "image", "file"])
    page.add_init_script(FRAME_PROBE)
    page.set_viewport_size({"width": 1280, "height": 800})
    login(page, user)
    limit = page.evaluate(
        "() => JSON.parse(document.getElementById('streamchat-config').textContent).attachments"
    )

    # An SVG (it can carry script): the server refuses it by its content, with its reason.
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect/></svg>'
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.set_input_files(
            "#sc-file", files=[{"name": "evil.svg", "mimeType": "image/svg+xml", "buffer": svg}]
        )
    assert answer.value.status == 400
    refused = chip(page, "evil.svg")
    refused.and_(page.locator('[data-status="refused"]')).wait_for()
    reason = refused.locator(".sc-attachment-error").inner_text()
    assert "not a file type the chat accepts" in reason
    assert refused.locator("img").is_hidden()

    # Above ATTACHMENT_MAX_BYTES: refused in the page, before a byte is sent.
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.set_input_files(
        "#sc-file",
        files=[
            {
                "name": "huge.png",
                "mimeType": "image/png",
                "buffer": png_bytes() + b"\0" * limit["max_bytes"],
            }
        ],
    )
    huge = chip(page, "huge.png")
    huge.and_(page.locator('[data-status="refused"]')).wait_for()
    reason = huge.locator(".sc-attachment-error").inner_text()
    assert reason == "An attachment may be at most 10 MB."
    assert posts == []
    screenshot(page, "refused-1280")
    assert not Attachment.objects.exists()

    # One more than ATTACHMENTS_PER_MESSAGE: the extra one is refused, the others upload.
    count = limit["per_message"]
    page.set_input_files(
        "#sc-file",
        files=[
            {"name": f"n{i}.png", "mimeType": "image/png", "buffer": png_bytes()}
            for i in range(count + 1)
        ],
    )
    for i in range(count):
        wait_ready(page, f"n{i}.png")
    extra = chip(page, f"n{count}.png")
    assert extra.get_attribute("data-status") == "refused"
    assert f"at most {count} attachments" in extra.locator(".sc-attachment-error").inner_text()
    assert Attachment.objects.count() == count

    # A refused chip is dismissed without a request; sending takes only the stored ones.
    extra.locator(".sc-attachment-remove").click()
    chip(page, "evil.svg").locator(".sc-attachment-remove").click()
    huge.locator(".sc-attachment-remove").click()
    assert page.locator(f'{CHIP}[data-status="refused"]').count() == 0
    page.fill("#sc-input", "Count them")
    page.press("#sc-input", "Enter")
    reply = wait_finished(page)
    assert reply.locator(".sc-body").inner_text().startswith(f"I see {count} images")
    (send,) = [f for f in sent_frames(page) if f.get("type") == "send"]
    assert len(send["attachments"]) == count
    assert_clean(browser_events, refusals=1)  # the SVG's 400


def test_a_model_that_cannot_read_images_refuses_and_the_files_stay(
    page: Any, login: Any, user: Any, simulator: Any, screenshot: Any, browser_events: Any
) -> None:
    model("meta-llama/llama-3.1-8b-instruct", ["text"])
    model("simulator/vision", ["text", "image"], default=False)
    page.set_viewport_size({"width": 1280, "height": 800})
    login(page, user)
    give_png(page, "paste", "screen.png", 64, 48)
    screen = wait_ready(page, "screen.png")
    page.fill("#sc-input", "What is this?")
    page.press("#sc-input", "Enter")

    refused = page.locator(".sc-msg--failed")
    refused.wait_for()
    error = refused.locator(".sc-msg-error").inner_text()
    assert "meta-llama/llama-3.1-8b-instruct does not read images" in error
    assert refused.locator(".sc-msg-attachments img").count() == 1
    # The upload stays, in the tray and unsent, removable again: another model can take it.
    assert screen.get_attribute("data-status") == "ready"
    assert screen.locator(".sc-attachment-remove").is_enabled()
    assert not Message.objects.exists()
    assert Attachment.objects.get().message_id is None
    screenshot(page, "cannot-read-1280")

    page.select_option("#sc-model", "simulator/vision")
    refused.locator("button[data-action=retry]").click()
    reply = wait_finished(page)
    assert reply.locator(".sc-body").inner_text().startswith("I see 1 image (PNG, 64×48).")
    page.locator(TRAY).wait_for(state="hidden")
    assert Attachment.objects.get().message_id == Message.objects.get(role="user").pk
    assert_clean(browser_events)
