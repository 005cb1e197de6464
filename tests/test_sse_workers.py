"""Server-Sent Events across two Daphne workers on the Redis channel layer: a reply started in one
is followed from another (from the database's checkpoints) with no gap and no repeat, and is
stopped from the other (through the channel layer)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from streamchat.models import ChatModel, Message
from streamchat.simulator.replies import DEFAULT_REPLY, long_reply
from tests.http_helpers import Event, asession_for, assemble, events

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def workers(redis_workers: Any) -> Any:
    return redis_workers


async def read(response: httpx.Response, until: str) -> list[Event]:
    seen = []
    async for event in events(response):
        seen.append(event)
        if event.event == until:
            break
    return seen


def frames(seen: list[Event]) -> list[dict[str, Any]]:
    return [e.data for e in seen if e.event not in ("comment", "end")]


async def test_sse_follows_and_stops_a_reply_running_in_another_worker(user, workers):
    first, second = workers
    session = await asession_for(user)
    a = httpx.AsyncClient(base_url=first.url, cookies=session.cookies, timeout=20)
    b = httpx.AsyncClient(base_url=second.url, cookies=session.cookies, timeout=20)
    try:
        body = {"client_id": "w1", "content": "Across workers"}
        async with a.stream("POST", "/chat/api/stream/", json=body, headers=session.headers) as r:
            seen = await read(r, until="delta")
        reply_id = seen[0].data["reply"]
        held = assemble(frames(seen))
        async with b.stream(
            "GET",
            f"/chat/api/replies/{reply_id}/events/",
            headers={"Last-Event-ID": seen[-1].id},
        ) as response:
            rest = await read(response, until="end")
        assert assemble(frames(rest), known=held) == DEFAULT_REPLY
        assert rest[-2].data["status"] == "complete"

        model = "simulator/long?tokens=2000"
        await ChatModel.objects.acreate(model_id=model, enabled=True)
        body = {"client_id": "w2", "content": "Stop me", "model": model}
        async with a.stream("POST", "/chat/api/stream/", json=body, headers=session.headers) as r:
            seen = []
            async for event in events(r):
                seen.append(event)
                if event.event == "delta" and len(seen) == 4:
                    stopped = await b.post(
                        f"/chat/api/replies/{seen[0].data['reply']}/stop/",
                        headers=session.headers,
                    )
                    assert stopped.status_code == 204, second.log()
                if event.event == "end":
                    break
        assert seen[-2].data["status"] == "stopped", first.log()
        reply = await Message.objects.aget(pk=seen[0].data["reply"])
        assert reply.status == "stopped"
        assert reply.content == assemble(frames(seen))
        assert len(reply.content) < len(long_reply(2000))
    finally:
        await a.aclose()
        await b.aclose()
