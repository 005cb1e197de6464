"""Websocket chat end to end: the demo's ASGI app, a real session, the simulator over HTTP."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from streamchat.models import ChatModel, Conversation, Message, Usage
from streamchat.simulator.replies import DEFAULT_REPLY
from streamchat.streaming.hub import get_hub

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _upstream(simulator_settings, settings):
    settings.STREAMCHAT = {**settings.STREAMCHAT, "CHECKPOINT_MS": 200, "GROUP_BATCH_MS": 50}
    return simulator_settings


def enable(model_id: str, **fields) -> ChatModel:
    return ChatModel.objects.create(model_id=model_id, enabled=True, **fields)


async def wait_for(predicate, timeout: float = 5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await sync_to_async(predicate)()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def settle_runs():
    """Wait until every reply running in this process has stored its end."""
    for run in list(get_hub().runs.values()):
        await asyncio.wait_for(run.done.wait(), 10)


async def test_send_streams_a_reply_and_stores_it(user, chat_socket, simulator):
    socket = await chat_socket(user)
    await socket.send(
        {"type": "send", "client_id": "c-1", "content": "Hello there", "conversation": None}
    )
    ack = await socket.recv_until("ack")
    started = await socket.recv_until("reply.started")
    assert started["reply"] == ack["reply"] and started["conversation"] == ack["conversation"]
    text, finished = await socket.reply(ack["reply"])
    assert text == DEFAULT_REPLY
    assert finished["status"] == "complete" and finished["finish_reason"] == "stop"
    assert finished["usage"]["completion_tokens"] > 0 and finished["usage"]["cost"] is not None
    assert finished["ttft_ms"] is not None
    deltas = [f for f in socket.frames if f["type"] == "delta"]
    assert 1 < len(deltas) < finished["usage"]["completion_tokens"]  # streamed, and coalesced

    await settle_runs()
    conversation = await Conversation.objects.aget(pk=ack["conversation"])
    assert conversation.title == "Hello there" and conversation.owner_id == user.pk
    question = await Message.objects.aget(pk=ack["message"])
    reply = await Message.objects.aget(pk=ack["reply"])
    assert (question.role, question.content, question.parent_id) == ("user", "Hello there", None)
    assert (reply.role, reply.status, reply.parent_id) == ("assistant", "complete", question.pk)
    assert reply.content == DEFAULT_REPLY and reply.lease_expires is None
    usage = await Usage.objects.aget(message=reply)
    assert usage.outcome == "complete" and usage.cost_source == "reported"
    assert usage.completion_tokens == finished["usage"]["completion_tokens"]
    assert usage.cost > 0 and usage.cost == Decimal(finished["usage"]["cost"])
    assert usage.generation_id.startswith("gen-") and usage.user_id == user.pk
    # What went upstream: the question, the attribution headers, the key.
    sent = simulator.chat_requests[-1]
    assert sent.json["messages"][-1] == {"role": "user", "content": "Hello there"}
    assert sent.json["stream"] is True and sent.json["model"] == "openai/gpt-4o-mini"
    assert sent.headers["Authorization"] == f"Bearer {simulator.api_key}"
    assert sent.headers["X-OpenRouter-Title"] == sent.headers["X-Title"] == "streamchat demo"
    await socket.close()


async def test_follow_up_sends_the_branch_as_context(user, chat_socket, simulator):
    await sync_to_async(enable)("simulator/echo", is_default=True, system_prompt="Be brief.")
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "a", "content": "first question"})
    ack = await socket.recv_until("ack")
    await socket.reply(ack["reply"])
    await socket.send(
        {"type": "send", "client_id": "b", "content": "second", "conversation": ack["conversation"]}
    )
    ack2 = await socket.recv_until("ack")
    text, _ = await socket.reply(ack2["reply"])
    assert text == "second"
    assert simulator.chat_requests[-1].json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first question"},
        {"role": "user", "content": "second"},
    ]
    await socket.close()


async def test_stop_closes_upstream_and_keeps_the_partial_reply(user, chat_socket, simulator):
    simulator.token_delay = 0.03
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "s", "content": "Tell me"})
    ack = await socket.recv_until("ack")
    text = await socket.text_of_at_least(20)
    await socket.send({"type": "stop", "reply": ack["reply"]})
    rest, finished = await socket.reply(ack["reply"], known=text)
    assert finished["status"] == "stopped"
    assert 20 <= len(rest) < len(DEFAULT_REPLY) and DEFAULT_REPLY.startswith(rest)
    await sync_to_async(simulator.wait_for_disconnect)(timeout=10)
    await settle_runs()
    reply = await Message.objects.aget(pk=ack["reply"])
    assert reply.status == "stopped" and reply.content == rest
    usage = await Usage.objects.aget(message=reply)
    assert usage.outcome == "stopped" and usage.completion_tokens > 0
    await socket.close()


async def test_a_stopped_reply_shows_an_estimate_then_the_ledgers_reported_cost(
    user, chat_socket, simulator
):
    """One cost for the user and the admin: the finish says its figures are an estimate (no usage
    chunk after a stop) and ``reply.usage`` brings OpenRouter's figure once the ledger has it."""
    simulator.token_delay = 0.03
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "est", "content": "Tell me"})
    ack = await socket.recv_until("ack")
    text = await socket.text_of_at_least(20)
    await socket.send({"type": "stop", "reply": ack["reply"]})
    _, finished = await socket.reply(ack["reply"], known=text)
    assert finished["status"] == "stopped" and finished["usage"]["estimated"] is True
    updated = await socket.recv_until("reply.usage")
    assert updated["reply"] == ack["reply"] and updated["usage"]["estimated"] is False
    usage = await Usage.objects.aget(message_id=ack["reply"])
    assert usage.cost_source == "reported"
    assert Decimal(updated["usage"]["cost"]) == usage.cost
    assert updated["usage"]["completion_tokens"] == usage.completion_tokens
    await socket.close()


async def test_st01_reply_outlives_the_socket(user, chat_socket, simulator):
    simulator.token_delay = 0.01
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "gone", "content": "Keep going"})
    ack = await socket.recv_until("ack")
    await socket.recv_until("delta")
    await socket.close()
    reply = await wait_for(
        lambda: Message.objects.filter(pk=ack["reply"], status="complete").first(), timeout=10
    )
    assert reply.content == DEFAULT_REPLY
    assert await Usage.objects.filter(message_id=ack["reply"], outcome="complete").acount() == 1


async def test_reconnect_and_resume_gets_the_rest_without_gap_or_repeat(
    user, chat_socket, simulator
):
    simulator.token_delay = 0.01
    first = await chat_socket(user)
    await first.send({"type": "send", "client_id": "r", "content": "Resume me"})
    ack = await first.recv_until("ack")
    seen = await first.text_of_at_least(30)
    await first.close()
    second = await chat_socket(user)
    await second.send({"type": "resume", "reply": ack["reply"], "offset": len(seen)})
    text, finished = await second.reply(ack["reply"], known=seen)
    assert text == DEFAULT_REPLY and finished["status"] == "complete"
    # Resuming a finished reply answers with its text and its finish.
    await second.send({"type": "resume", "reply": ack["reply"], "offset": 5})
    text, finished = await second.reply(ack["reply"], known=DEFAULT_REPLY[:5])
    assert text == DEFAULT_REPLY and finished["usage"]["completion_tokens"] > 0
    await second.close()


async def test_two_tabs_see_the_same_reply(user, chat_socket, simulator):
    simulator.token_delay = 0.005
    tab1 = await chat_socket(user)
    await tab1.send({"type": "send", "client_id": "t1", "content": "One"})
    ack = await tab1.recv_until("ack")
    await tab1.reply(ack["reply"])
    tab2 = await chat_socket(user)
    await tab2.send({"type": "subscribe", "conversation": ack["conversation"]})
    await tab2.send({"type": "ping"})
    await tab2.recv_until("pong")
    await tab1.send(
        {"type": "send", "client_id": "t2", "content": "Two", "conversation": ack["conversation"]}
    )
    ack2 = await tab1.recv_until("ack")
    started = await tab2.recv_until("reply.started")
    assert started["reply"] == ack2["reply"]
    text2, finished2 = await tab2.reply(ack2["reply"])
    text1, finished1 = await tab1.reply(ack2["reply"])
    assert (
        text1 == text2 == DEFAULT_REPLY and finished1["status"] == finished2["status"] == "complete"
    )
    await tab1.close()
    await tab2.close()


async def test_the_same_client_id_twice_makes_one_message_and_one_reply(user, chat_socket):
    socket = await chat_socket(user)
    frame = {"type": "send", "client_id": "dup", "content": "Only once"}
    await socket.send(frame)
    ack = await socket.recv_until("ack")
    await socket.reply(ack["reply"])
    await socket.send(frame)
    again = await socket.recv_until("ack")
    assert again["duplicate"] is True
    assert (again["message"], again["reply"], again["conversation"]) == (
        ack["message"],
        ack["reply"],
        ack["conversation"],
    )
    await settle_runs()
    assert await Message.objects.acount() == 2 and await Usage.objects.acount() == 1
    await socket.close()


async def test_regenerate_keeps_the_earlier_reply_as_a_sibling(user, chat_socket, simulator):
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "q", "content": "Question"})
    ack = await socket.recv_until("ack")
    await socket.reply(ack["reply"])
    simulator.next_reply("A second answer.")
    await socket.send({"type": "regenerate", "reply": ack["reply"], "client_id": "regen-1"})
    regen = await socket.recv_until("ack")
    text, _ = await socket.reply(regen["reply"])
    assert text == "A second answer." and regen["message"] == ack["message"]
    await settle_runs()
    siblings = [m async for m in Message.objects.filter(parent_id=ack["message"]).order_by("id")]
    assert [m.pk for m in siblings] == [ack["reply"], regen["reply"]]
    assert siblings[0].content == DEFAULT_REPLY  # the first branch is kept
    await socket.close()


async def test_edit_starts_a_new_branch_beside_the_old_question(user, chat_socket, simulator):
    await sync_to_async(enable)("simulator/echo", is_default=True)
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "e0", "content": "Original"})
    ack = await socket.recv_until("ack")
    await socket.reply(ack["reply"])
    await socket.send(
        {"type": "edit", "message": ack["message"], "content": "Edited", "client_id": "e1"}
    )
    edit = await socket.recv_until("ack")
    text, _ = await socket.reply(edit["reply"])
    assert text == "Edited"
    await settle_runs()
    old = await Message.objects.aget(pk=ack["message"])
    new = await Message.objects.aget(pk=edit["message"])
    assert new.parent_id == old.parent_id and new.content == "Edited" and old.content == "Original"
    assert simulator.chat_requests[-1].json["messages"] == [{"role": "user", "content": "Edited"}]
    await socket.close()


async def test_mid_stream_error_keeps_partial_text_and_reports_it(user, chat_socket):
    await sync_to_async(enable)("simulator/error-mid?after=5", is_default=True)
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "err", "content": "Break"})
    ack = await socket.recv_until("ack")
    text, finished = await socket.reply(ack["reply"])
    assert finished["status"] == "error" and finished["error"]["code"] == "stream_error"
    assert finished["error"]["message"]
    assert text and DEFAULT_REPLY.startswith(text)
    await settle_runs()
    reply = await Message.objects.aget(pk=ack["reply"])
    assert (reply.status, reply.content, reply.error_code) == ("error", text, "stream_error")
    assert await Usage.objects.filter(message=reply, outcome="error").acount() == 1
    await socket.close()


async def test_upstream_refusal_before_streaming_keeps_the_question(user, chat_socket):
    await sync_to_async(enable)("simulator/moderation", is_default=True)
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "mod", "content": "Something flagged"})
    ack = await socket.recv_until("ack")
    text, finished = await socket.reply(ack["reply"])
    assert (
        text == "" and finished["status"] == "error" and finished["error"]["code"] == "moderation"
    )
    await settle_runs()
    assert await Message.objects.filter(pk=ack["message"], content="Something flagged").aexists()
    await socket.close()


async def test_database_writes_do_not_grow_with_the_reply_length(
    user, chat_socket, simulator, settings
):
    """ST-15: a 500-token reply writes about as often as a 50-token one of the same duration."""
    from django.db import connection

    writes: list[str] = []

    def count(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            writes.append(sql)
        return execute(sql, params, many, context)

    await sync_to_async(lambda: connection.execute_wrappers.append(count))()
    try:
        counts = {}
        for tokens, delay in ((50, 0.016), (500, 0.0016)):
            await sync_to_async(enable)(f"simulator/long?tokens={tokens}")
            socket = await chat_socket(user)
            writes.clear()
            await socket.send(
                {
                    "type": "send",
                    "client_id": f"n{tokens}",
                    "content": "Count",
                    "model": f"simulator/long?tokens={tokens}",
                }
            )
            simulator.token_delay = delay
            ack = await socket.recv_until("ack")
            await socket.reply(ack["reply"])
            await settle_runs()
            counts[tokens] = len(writes)
            await socket.close()
    finally:
        await sync_to_async(lambda: connection.execute_wrappers.remove(count))()
    assert counts[500] <= counts[50] + 3, counts
    assert counts[500] < 30, counts


async def test_anonymous_socket_is_closed_4401(chat_socket):
    socket = await chat_socket(None)
    closed = await socket.communicator.receive_output(timeout=2)
    assert closed == {"type": "websocket.close", "code": 4401}


async def test_signals_fire_once_per_reply_with_its_rows(user, chat_socket):
    from streamchat import signals

    seen = []

    def on_finished(sender, message, usage, **kwargs):
        seen.append(("finished", message.pk, message.status, usage.outcome))

    async def on_usage(sender, usage, **kwargs):
        seen.append(("usage", usage.message_id, usage.completion_tokens > 0))

    signals.reply_finished.connect(on_finished)
    signals.usage_recorded.connect(on_usage)
    try:
        socket = await chat_socket(user)
        await socket.send({"type": "send", "client_id": "sig", "content": "Signal me"})
        ack = await socket.recv_until("ack")
        await socket.reply(ack["reply"])
        await settle_runs()
    finally:
        signals.reply_finished.disconnect(on_finished)
        signals.usage_recorded.disconnect(on_usage)
    assert seen == [
        ("finished", ack["reply"], "complete", "complete"),
        ("usage", ack["reply"], True),
    ]
    await socket.close()


async def test_nul_and_lone_surrogates_are_removed_the_same_way_everywhere(user, chat_socket):
    await sync_to_async(enable)("simulator/echo", is_default=True)
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "nul", "content": "a\x00b\ud800c"})
    ack = await socket.recv_until("ack")
    text, finished = await socket.reply(ack["reply"])
    assert text == "abc" and finished["status"] == "complete"
    await settle_runs()
    assert (await Message.objects.aget(pk=ack["message"])).content == "abc"
    assert (await Message.objects.aget(pk=ack["reply"])).content == "abc"
    await socket.close()


async def test_a_failing_key_is_marked_and_the_next_key_answers(
    user, chat_socket, simulator, settings
):
    from streamchat.crypto import encrypt
    from streamchat.keys import key_hint
    from streamchat.models import ApiKey

    settings.STREAMCHAT = {**settings.STREAMCHAT, "API_KEY": None}
    bad_secret = "sk-or-v1-" + "0" * 40
    bad = await ApiKey.objects.acreate(
        label="old", secret_encrypted=encrypt(bad_secret), hint=key_hint(bad_secret), priority=1
    )
    good = await ApiKey.objects.acreate(
        label="new",
        secret_encrypted=encrypt(simulator.api_key),
        hint=key_hint(simulator.api_key),
        priority=2,
    )
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "keys", "content": "Which key?"})
    ack = await socket.recv_until("ack")
    text, finished = await socket.reply(ack["reply"])
    assert finished["status"] == "complete" and text == DEFAULT_REPLY
    await settle_runs()
    await bad.arefresh_from_db()
    await good.arefresh_from_db()
    assert bad.last_error and bad_secret not in bad.last_error and bad.is_failing
    assert (await Usage.objects.aget(message_id=ack["reply"])).api_key_id == good.pk
    await wait_for(lambda: ApiKey.objects.get(pk=good.pk).last_used is not None)
    assert bad_secret not in str(socket.frames)
    await socket.close()


async def test_openrouters_own_429_is_not_our_rate_limit(user, chat_socket, settings):
    settings.STREAMCHAT = {**settings.STREAMCHAT, "RETRY_AFTER_MAX": 1.0}
    await sync_to_async(enable)("simulator/rate-limit?retry_after=42", is_default=True)
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "429", "content": "Too many"})
    ack = await socket.recv_until("ack")
    _, finished = await socket.reply(ack["reply"])
    assert finished["status"] == "error"
    assert (
        finished["error"]["code"] == "upstream_rate_limited"
        and finished["error"]["retry_after"] == 42
    )
    await settle_runs()
    assert (await Usage.objects.aget(message_id=ack["reply"])).error_code == "upstream_rate_limited"
    assert await Message.objects.filter(pk=ack["message"], content="Too many").aexists()
    await socket.close()


async def test_resume_on_the_socket_that_follows_resends_from_the_offset(
    user, chat_socket, simulator
):
    """A client that detects a gap asks again on the same socket; the client rules of
    docs/protocol.md (append, drop an overlap) then give the exact text."""
    simulator.token_delay = 0.01
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "gap", "content": "Gap"})
    ack = await socket.recv_until("ack")
    text = ""
    resent = False
    while True:
        frame = await socket.recv()
        if frame.get("reply") != ack["reply"]:
            continue
        if frame["type"] == "delta":
            assert frame["offset"] <= len(text), "a gap"
            text += frame["text"][len(text) - frame["offset"] :]
            if len(text) > 40 and not resent:
                resent = True
                await socket.send({"type": "resume", "reply": ack["reply"], "offset": 10})
        elif frame["type"] == "reply.finished":
            break
    assert text == DEFAULT_REPLY
    assert any(f["type"] == "delta" and f["offset"] == 10 for f in socket.frames)
    await socket.close()
