"""Graceful drain on SIGTERM (issue 15), over a real Daphne process and a real signal.

A deploy stops a worker with SIGTERM: new sends are refused ``server_restarting``, a reply that
finishes within ``DRAIN_SECONDS`` finishes, one that does not ends ``interrupted`` with all the
text its client was sent, sockets close 4012 (the page reconnects elsewhere and resumes), and no
row stays ``streaming``.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
import websockets

from streamchat.models import ChatModel, Message, Usage
from tests.live_ws import asession_cookie, connect, frames, read_reply, recv_until, send
from tests.servers import DaphneServer

pytestmark = [pytest.mark.django_db(transaction=True)]

MODEL = "simulator/long?tokens=400"


async def close_code(socket) -> int:
    try:
        async for _ in frames(socket, timeout=30):
            pass
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else 1006
    raise AssertionError("unreachable")


def exited(worker: DaphneServer, timeout: float = 60) -> int:
    return worker.process.wait(timeout)


async def start_reply(worker: DaphneServer, user, client_id: str):
    socket = await connect(worker, await asession_cookie(user))
    await send(socket, {"type": "send", "client_id": client_id, "content": "Talk for a while"})
    ack = await recv_until(socket, "ack")
    first = await recv_until(socket, "delta", reply=ack["reply"])
    return socket, ack["reply"], first["text"]


async def killed_mid_reply(simulator, env: dict[str, str], user, client_id: str) -> int:
    """Start a reply on a worker and SIGKILL the worker once the first delta arrived."""
    worker = DaphneServer(simulator=simulator, env=env)
    try:
        _, reply_id, _ = await start_reply(worker, user, client_id)
        os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.wait(10)
    finally:
        worker.stop()
    return reply_id


async def test_a_reply_that_fits_the_drain_finishes_and_the_socket_closes_4012(user, simulator):
    simulator.token_delay = 0.01  # 400 tokens: about 4 s
    await ChatModel.objects.acreate(model_id=MODEL, enabled=True, is_default=True)
    worker = DaphneServer(simulator=simulator, env={"STREAMCHAT_LIVE_DRAIN_SECONDS": "60"})
    try:
        socket, reply_id, known = await start_reply(worker, user, "fits")
        idle = await connect(worker, await asession_cookie(user))
        os.kill(worker.process.pid, signal.SIGTERM)
        assert await close_code(idle) == 4012  # idle sockets go at once: reconnect elsewhere
        # The streaming socket still works: a new send is refused, the reply goes on.
        await send(socket, {"type": "send", "client_id": "late", "content": "One more?"})
        text, finished = known, None
        refused = None
        async for frame in frames(socket, timeout=30):
            if frame["type"] == "error":
                refused = frame
            elif frame["type"] == "delta" and frame["reply"] == reply_id:
                assert frame["offset"] <= len(text)
                text += frame["text"][len(text) - frame["offset"] :]
            elif frame["type"] == "reply.finished":
                finished = frame
                break
        assert refused is not None and refused["code"] == "server_restarting"
        assert refused["client_id"] == "late" and refused["retry_after"] >= 1
        assert finished["status"] == "complete"
        assert await close_code(socket) == 4012
        assert exited(worker) == 0 or worker.process.returncode is not None
        reply = await Message.objects.aget(pk=reply_id)
        assert (reply.status, reply.content) == ("complete", text)
        assert not await Message.objects.filter(client_message_id="late").aexists()
    finally:
        worker.stop()


async def test_a_reply_longer_than_the_drain_ends_interrupted_with_all_it_sent(user, simulator):
    simulator.token_delay = 0.02  # 400 tokens: about 8 s, the drain is 1 s
    await ChatModel.objects.acreate(model_id=MODEL, enabled=True, is_default=True)
    worker = DaphneServer(
        simulator=simulator,
        # Checkpoints far apart: what is stored comes from the drain's final write.
        env={"STREAMCHAT_LIVE_DRAIN_SECONDS": "1", "STREAMCHAT_LIVE_CHECKPOINT_MS": "60000"},
    )
    try:
        socket, reply_id, known = await start_reply(worker, user, "long")
        os.kill(worker.process.pid, signal.SIGTERM)
        text, finished = await read_reply(socket, reply_id, known=known, timeout=30)
        assert finished["status"] == "interrupted"
        assert finished["error"]["code"] == "interrupted"
        assert await close_code(socket) == 4012
        exited(worker)
        reply = await Message.objects.aget(pk=reply_id)
        assert reply.status == "interrupted"
        assert reply.content == text and len(text) > len(known)  # nothing the client saw is lost
        usage = await Usage.objects.aget(message_id=reply_id)
        assert usage.outcome == "interrupted" and usage.completion_tokens > 0
        assert not await Message.objects.filter(status="streaming").aexists()
    finally:
        worker.stop()


async def test_st05_a_restarted_worker_reaps_without_waiting_for_a_socket(user, simulator):
    """A worker SIGKILLed mid-reply; the next worker to start marks the reply interrupted on its
    own (its engine starts with the server), before any socket connects."""
    simulator.token_delay = 0.02
    await ChatModel.objects.acreate(model_id=MODEL, enabled=True, is_default=True)
    env = {"STREAMCHAT_LIVE_LEASE_SECONDS": "1", "STREAMCHAT_LIVE_CHECKPOINT_MS": "100"}
    reply_id = await killed_mid_reply(simulator, env, user, "killed")
    second = DaphneServer(simulator=simulator, env=env)
    try:
        for _ in range(300):
            status = (await Message.objects.aget(pk=reply_id)).status
            if status != "streaming":
                break
            await asyncio.sleep(0.05)
        assert status == "interrupted"
    finally:
        second.stop()


async def test_rl04_a_reply_killed_before_its_first_renewal_frees_its_slot_within_the_lease(
    user, simulator
):
    """SIGKILL 'three seconds in', before any checkpoint renewed anything: the reservation's
    first lease is already LEASE_SECONDS (not TOTAL_TIMEOUT), and the reaper that interrupts the
    reply settles it, so a user with one stream slot can send again."""
    from streamchat.models import RateLimit, Reservation

    simulator.token_delay = 0.02
    await ChatModel.objects.acreate(model_id=MODEL, enabled=True, is_default=True)
    await RateLimit.objects.acreate(scope="user", user=user, concurrent_streams=1)
    env = {"STREAMCHAT_LIVE_LEASE_SECONDS": "2", "STREAMCHAT_LIVE_CHECKPOINT_MS": "60000"}
    reply_id = await killed_mid_reply(simulator, env, user, "killed-early")
    second = DaphneServer(simulator=simulator, env=env)
    try:
        for _ in range(400):
            reservation = await Reservation.objects.aget(message_id=reply_id)
            if reservation.state == "settled":
                break
            await asyncio.sleep(0.05)
        assert reservation.state == "settled"
        assert (await Message.objects.aget(pk=reply_id)).status == "interrupted"
        socket = await connect(second, await asession_cookie(user))
        await send(socket, {"type": "send", "client_id": "again", "content": "Still there?"})
        ack = await recv_until(socket, "ack")
        _, finished = await read_reply(socket, ack["reply"], timeout=30)
        assert finished["status"] == "complete"  # the slot was free
    finally:
        second.stop()


async def test_under_uvicorn_sigterm_drains_through_the_lifespan(user, simulator):
    """uvicorn closes its websockets itself on SIGTERM (1012), then runs the lifespan shutdown:
    streamchat's ``Lifespan`` drains there, so the reply, cut off after DRAIN_SECONDS, is stored
    ``interrupted`` with at least every character its client received, and nothing is left
    ``streaming``."""
    from tests.servers import UvicornServer

    simulator.token_delay = 0.02  # about 8 s, the drain is 1 s
    await ChatModel.objects.acreate(model_id=MODEL, enabled=True, is_default=True)
    worker = UvicornServer(
        simulator=simulator,
        env={"STREAMCHAT_LIVE_DRAIN_SECONDS": "1", "STREAMCHAT_LIVE_CHECKPOINT_MS": "60000"},
    )
    try:
        socket, reply_id, known = await start_reply(worker, user, "uvicorn")
        os.kill(worker.process.pid, signal.SIGTERM)
        text, code = known, None
        try:
            async for frame in frames(socket, timeout=30):
                if frame["type"] == "delta" and frame["reply"] == reply_id:
                    text += frame["text"][len(text) - frame["offset"] :]
        except websockets.ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else 1006
        assert code in (1012, 4012)
        # uvicorn re-raises the signal once it has shut down: "killed by SIGTERM" is its clean exit.
        assert exited(worker) in (0, -signal.SIGTERM)
        reply = await Message.objects.aget(pk=reply_id)
        assert reply.status == "interrupted"
        assert reply.content.startswith(text) and len(reply.content) >= len(text)
        assert not await Message.objects.filter(status="streaming").aexists()
        assert "drained in" in worker.log()
    finally:
        worker.stop()
