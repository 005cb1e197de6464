"""ST-05 through Server-Sent Events: a reply streams from worker A to its SSE client, a second tab
follows it from worker B; A is SIGKILLed. Within a bounded time both the follower on B and the
first client, reconnecting to B with its ``Last-Event-ID`` (as an ``EventSource`` behind a load
balancer does), get ``reply.finished`` with status ``interrupted`` and the ``end`` event: no
endless stream. The stored text is the last checkpoint, exactly what upstream sent up to there.
(The websocket side is tests/test_faults_workers.py.)"""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import pytest
from asgiref.sync import sync_to_async

from streamchat.models import ChatModel, Message, Usage
from streamchat.simulator.replies import long_reply
from tests.http_helpers import SETTINGS, Event, asession_for, events
from tests.live_ws import wait_for
from tests.servers import DaphneServer

pytestmark = [pytest.mark.django_db(transaction=True)]

LEASE_SECONDS = 2
# Short leases and checkpoints for the live workers (tests/settings.py reads these).
LIVE_ENV = {
    "DJANGO_SETTINGS_MODULE": SETTINGS,
    "STREAMCHAT_LIVE_LEASE_SECONDS": str(LEASE_SECONDS),
    "STREAMCHAT_LIVE_CHECKPOINT_MS": "100",
}
MODEL = "simulator/long?tokens=3000"


def saved_text(reply_id: int) -> str:
    return Message.objects.values_list("content", flat=True).get(pk=reply_id)


async def follow(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> list[Event]:
    """Read a follow stream to its ``end`` event."""
    seen = []
    async with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        async for event in events(response):
            if event.event != "comment":
                seen.append(event)
            if event.event == "end":
                break
    return seen


def text_of(seen: list[Event], held: str = "") -> str:
    """``held`` plus the deltas, asserting each starts exactly where the text ends."""
    text = held
    for event in seen:
        if event.event == "delta":
            assert event.data["offset"] == len(text), (event.data["offset"], len(text))
            text += event.data["text"]
    return text


async def test_st05_sse_followers_of_a_killed_workers_reply_get_interrupted(user, simulator):
    simulator.token_delay = 0.01  # 30 s for the whole reply: it is killed long before the end
    await ChatModel.objects.acreate(model_id=MODEL, enabled=True, is_default=True)
    session = await asession_for(user)
    transcript = long_reply(3000)
    worker_a = DaphneServer(simulator=simulator, env=LIVE_ENV)
    worker_b = DaphneServer(simulator=simulator, env=LIVE_ENV)
    a = httpx.AsyncClient(base_url=worker_a.url, cookies=session.cookies, timeout=20)
    b = httpx.AsyncClient(base_url=worker_b.url, cookies=session.cookies, timeout=20)
    try:
        held, last_id, seen = "", "0", []
        tab: asyncio.Task[list[Event]] | None = None
        body = {"client_id": "doomed", "content": "Talk a lot"}
        try:
            async with a.stream(
                "POST", "/chat/api/stream/", json=body, headers=session.headers
            ) as r:
                async for event in events(r):
                    seen.append(event)
                    if event.event == "delta":
                        held = text_of([event], held)
                        last_id = event.id
                    if event.event == "reply.started" and tab is None:
                        reply_id = event.data["reply"]
                        url = f"/chat/api/replies/{reply_id}/events/"
                        # A second tab follows the reply from worker B, from the start.
                        tab = asyncio.create_task(follow(b, url, {}))
                    if len(held) > 300 and len(await sync_to_async(saved_text)(reply_id)) > 200:
                        os.kill(worker_a.process.pid, signal.SIGKILL)  # mid-reply, no goodbye
                        worker_a.process.wait(5)
                        break
        except httpx.HTTPError:
            pass  # the connection to the dead worker broke
        assert "end" not in [e.event for e in seen]
        assert tab is not None
        # The dead worker's last lease: nobody renews it any more.
        lease_at_kill = (await Message.objects.aget(pk=reply_id)).lease_expires

        # The first client reconnects to B with its Last-Event-ID.
        resumed = await asyncio.wait_for(
            follow(b, url, {"Last-Event-ID": last_id}), timeout=4 * LEASE_SECONDS + 5
        )
        followed = await asyncio.wait_for(tab, timeout=4 * LEASE_SECONDS + 5)

        reply = await Message.objects.aget(pk=reply_id)
        assert reply.status == "interrupted" and reply.lease_expires is None
        # Interrupted once the dead worker's lease had lapsed, not before.
        assert lease_at_kill is not None and reply.completed >= lease_at_kill
        # The last checkpoint: exactly what upstream sent up to there.
        assert reply.content and transcript.startswith(reply.content)
        for events_seen in (followed, resumed):
            assert [e.event for e in events_seen if e.event != "delta"][-2:] == [
                "reply.finished",
                "end",
            ]
            finished = events_seen[-2].data
            assert (
                finished["status"] == "interrupted" and finished["error"]["code"] == "interrupted"
            )
            assert finished["length"] == len(reply.content)
        # The tab that followed from the start holds exactly the stored text.
        assert text_of(followed) == reply.content
        # The first client may hold text streamed after the last checkpoint: the finish frame's
        # length says where the stored reply ends, and what it holds agrees up to there.
        assert text_of(resumed, held)[: len(reply.content)] == reply.content
        assert held == transcript[: len(held)]
        assert [u.outcome async for u in Usage.objects.filter(message_id=reply_id)] == [
            "interrupted"
        ]
        await wait_for(lambda: not Message.objects.filter(status="streaming").exists())
    finally:
        await a.aclose()
        await b.aclose()
        worker_a.stop()
        worker_b.stop()
