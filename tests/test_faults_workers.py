"""A Daphne worker SIGKILLed mid-reply, then restarted: the reply ends ``interrupted`` with its last
checkpoint within a bounded time, the page that resumes it is told so (no endless spinner), and the
user's limits are not held by the dead reply (ST-05, RL-04 through the engine)."""

from __future__ import annotations

import os
import signal
import time

import pytest
from asgiref.sync import sync_to_async

from streamchat.models import ChatModel, Message, RateLimit, Reservation, Usage
from streamchat.simulator.replies import long_reply
from tests.live_ws import asession_cookie, connect, frames, read_reply, recv_until, send, wait_for
from tests.servers import DaphneServer

pytestmark = [pytest.mark.django_db(transaction=True)]

LEASE_SECONDS = 2
# Short leases and checkpoints for the live workers (tests/settings.py reads these).
LIVE_ENV = {
    "STREAMCHAT_LIVE_LEASE_SECONDS": str(LEASE_SECONDS),
    "STREAMCHAT_LIVE_CHECKPOINT_MS": "100",
}
MODEL = "simulator/long?tokens=3000"


def saved_text(reply_id: int) -> str:
    return Message.objects.values_list("content", flat=True).get(pk=reply_id)


async def test_st05_rl04_killed_worker_reply_is_interrupted_and_frees_its_slot(user, simulator):
    simulator.token_delay = 0.01  # 30 s for the whole reply: it is killed long before the end
    await ChatModel.objects.acreate(model_id=MODEL, enabled=True, is_default=True)
    await RateLimit.objects.acreate(scope="user", user=user, concurrent_streams=1)
    cookie = await asession_cookie(user)
    transcript = long_reply(3000)

    worker = DaphneServer(simulator=simulator, env=LIVE_ENV)
    try:
        socket = await connect(worker, cookie)
        await send(socket, {"type": "send", "client_id": "doomed", "content": "Talk a lot"})
        ack = await recv_until(socket, "ack")
        reply_id = ack["reply"]
        # Streaming for a while: a few checkpoints and lease renewals have happened.
        await wait_for(lambda: len(saved_text(reply_id)) > 200, timeout=10)
        await wait_for(
            lambda: (
                Reservation.objects.filter(user=user, state="open").first().expires.timestamp()
                < time.time() + LEASE_SECONDS + 1
            ),
            timeout=10,
        )
        saved_before_kill = await sync_to_async(saved_text)(reply_id)
        os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.wait(5)
        # The dead worker's last lease: nobody renews it any more.
        lease_at_kill = (await Message.objects.aget(pk=reply_id)).lease_expires
    finally:
        worker.stop()

    restarted = DaphneServer(simulator=simulator, env=LIVE_ENV)  # what a supervisor does
    try:
        page = await connect(restarted, cookie)  # the page reconnects and resumes the reply
        await send(page, {"type": "resume", "reply": reply_id, "offset": 0})
        # Bounded: the lease, one reaper round and a worker start-up (a generous bound on waiting).
        text, finished = await read_reply(page, reply_id, timeout=4 * LEASE_SECONDS + 5)
        assert finished["status"] == "interrupted", finished
        assert finished["error"]["code"] == "interrupted"
        reply = await Message.objects.aget(pk=reply_id)
        assert reply.status == "interrupted" and reply.lease_expires is None
        # The text up to the last checkpoint, exactly what upstream sent up to there.
        assert reply.content.startswith(saved_before_kill) and transcript.startswith(reply.content)
        assert text == reply.content and finished["length"] == len(reply.content)
        # Interrupted once the dead worker's lease had lapsed, not before.
        assert lease_at_kill is not None and reply.completed >= lease_at_kill
        usage = [u async for u in Usage.objects.filter(message_id=reply_id)]
        assert [u.outcome for u in usage] == ["interrupted"]

        # RL-04: the dead reply's stream slot (concurrent_streams = 1) is free again.
        await send(page, {"type": "send", "client_id": "after", "content": "Again", "model": None})
        answer = None
        async for frame in frames(page):
            if frame["type"] in ("ack", "error"):
                answer = frame
                break
        assert answer["type"] == "ack", answer
        await send(page, {"type": "stop", "reply": answer["reply"]})
        _, stopped = await read_reply(page, answer["reply"])
        assert stopped["status"] == "stopped"
        await page.close()
    finally:
        restarted.stop()
