"""Server-Sent Events in headless Chromium: a browser ``EventSource`` that loses its connection
mid-reply reconnects with ``Last-Event-ID`` and ends with the exact transcript.

The browser talks to the live Daphne through a small TCP proxy of this test, which cuts every
open connection at once: a real network loss, not a client that chose to close.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from streamchat.models import ChatModel, Message
from streamchat.simulator.replies import long_reply
from tests.servers import free_port

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.browser,
    pytest.mark.once,
]

MODEL = "simulator/long?tokens=300"


class CuttingProxy:
    """Forwards loopback TCP connections to ``target_port``; ``cut()`` aborts all open ones.
    ``requests`` keeps what clients sent (request heads), to see the headers of a reconnect."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.requests: list[bytes] = []
        self._transports: set[Any] = set()
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._transports |= {writer.transport, up_writer.transport}

        async def pipe(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, record: bool
        ) -> None:
            try:
                while data := await source.read(65536):
                    if record:
                        self.requests.append(data)
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))

    def cut(self) -> None:
        def abort() -> None:
            for transport in list(self._transports):
                transport.abort()
            self._transports.clear()

        self._loop.call_soon_threadsafe(abort)

    def stop(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


# Runs in the page: start a reply with fetch (read until its ack, then let go), then follow it
# with an EventSource that checks every delta lands exactly at the end of the text it holds.
FOLLOW = """async (model) => {
  const csrf = document.cookie.match(/csrftoken=([^;]+)/)[1];
  const response = await fetch("/chat/api/stream/", {
    method: "POST",
    headers: {"Content-Type": "application/json", "X-CSRFToken": csrf},
    body: JSON.stringify({type: "send", client_id: "browser-1", content: "Count", model: model}),
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", ack = null;
  while (!ack) {
    const {value, done} = await reader.read();
    if (done) throw new Error("stream ended before the ack");
    buffer += value;
    const found = buffer.match(/event: ack\\ndata: (.*)\\n/);
    if (found) ack = JSON.parse(found[1]);
  }
  await reader.cancel();  // going away does not stop the reply

  const state = window.__sse = {text: "", opens: 0, errors: 0, problems: [], ids: [], done: false};
  const source = new EventSource("/chat/api/replies/" + ack.reply + "/events/");
  source.onopen = () => { state.opens += 1; };
  source.onerror = () => { state.errors += 1; };
  source.addEventListener("delta", (event) => {
    const frame = JSON.parse(event.data);
    const held = Array.from(state.text).length;
    if (frame.offset !== held) state.problems.push("delta at " + frame.offset + ", held " + held);
    state.text += frame.text;
    state.ids.push(event.lastEventId);
  });
  source.addEventListener("reply.finished", (event) => {
    state.finished = JSON.parse(event.data);
  });
  source.addEventListener("end", () => { source.close(); state.done = true; });
  return ack.reply;
}"""


def test_eventsource_resumes_after_a_lost_connection_with_the_exact_transcript(
    browser: Any, live_daphne: Any, login: Any, user: Any, simulator: Any
) -> None:
    ChatModel.objects.create(model_id=MODEL, enabled=True)
    simulator.token_delay = 0.01
    proxy = CuttingProxy(live_daphne.port)
    context = browser.new_context(base_url=proxy.url)
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        login(page, user, next="/chat/tokens/")  # a quiet page of the app (no websocket)
        reply_id = page.evaluate(FOLLOW, MODEL)
        page.wait_for_function("() => window.__sse && window.__sse.text.length > 40")
        proxy.cut()  # the network drops mid-reply
        page.wait_for_function("() => window.__sse.done")
        state = page.evaluate("() => window.__sse")
    finally:
        context.close()
        proxy.stop()

    expected = long_reply(300)
    assert state["problems"] == []  # no gap, no repeat
    assert state["text"] == expected
    assert state["finished"]["status"] == "complete"
    assert state["finished"]["length"] == len(expected)
    assert state["opens"] >= 2 and state["errors"] >= 1  # it did lose the connection
    reconnects = [
        request
        for request in proxy.requests
        if request.startswith(f"GET /chat/api/replies/{reply_id}/events/".encode())
    ]
    assert len(reconnects) >= 2
    last_ids = [
        line.split(b":", 1)[1].strip()
        for request in reconnects
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"last-event-id:")
    ]
    assert last_ids and all(int(value) > 0 for value in last_ids), reconnects
    assert Message.objects.get(pk=reply_id).content == expected
