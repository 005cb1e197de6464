"""Every bad frame gets an error frame, the socket stays usable, and nothing is stored."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from streamchat.models import ChatModel, Conversation, Message, Usage

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _upstream(simulator_settings):
    return simulator_settings


async def assert_nothing_stored():
    assert await Message.objects.acount() == 0
    assert await Usage.objects.acount() == 0


async def still_usable(socket):
    await socket.send({"type": "ping"})
    assert (await socket.recv())["type"] == "pong"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "bad_json"),
        ('{"type": ', "bad_json"),
        ("[]", "bad_json"),
        ("5", "bad_json"),
        ('"send"', "bad_json"),
        ("", "unsupported_data"),
    ],
)
async def test_ws14_unparseable_frames(user, chat_socket, raw, code, caplog):
    socket = await chat_socket(user)
    await socket.communicator.send_input({"type": "websocket.receive", "text": raw})
    error = await socket.recv()
    assert error["type"] == "error" and error["code"] == code and error["message"]
    await still_usable(socket)
    await assert_nothing_stored()
    assert "Traceback" not in caplog.text
    await socket.close()


async def test_ws14_binary_frame(user, chat_socket):
    socket = await chat_socket(user)
    await socket.communicator.send_to(bytes_data=b"\x00\x01binary")
    error = await socket.recv()
    assert error["code"] == "unsupported_data"
    await still_usable(socket)
    await socket.close()


@pytest.mark.parametrize(
    ("frame", "code", "field"),
    [
        ({"type": "launch"}, "unknown_type", "type"),
        ({"content": "no type"}, "unknown_type", "type"),
        ({"type": "send", "client_id": "x"}, "invalid", "content"),
        ({"type": "send", "client_id": "x", "content": 5}, "invalid", "content"),
        ({"type": "send", "client_id": "x", "content": ["a"]}, "invalid", "content"),
        ({"type": "send", "client_id": "x", "content": "   "}, "invalid", "content"),
        ({"type": "send", "content": "hi"}, "invalid", "client_id"),
        ({"type": "send", "client_id": "x" * 65, "content": "hi"}, "invalid", "client_id"),
        (
            {"type": "send", "client_id": "x", "content": "hi", "conversation": "1"},
            "invalid",
            "conversation",
        ),
        (
            {"type": "send", "client_id": "x", "content": "hi", "temperature": 7},
            "invalid",
            "temperature",
        ),
        (
            {"type": "send", "client_id": "x", "content": "hi", "temperature": "hot"},
            "invalid",
            "temperature",
        ),
        (
            {"type": "send", "client_id": "x", "content": "hi", "max_tokens": 10**9},
            "invalid",
            "max_tokens",
        ),
        (
            {"type": "send", "client_id": "x", "content": "hi", "max_tokens": True},
            "invalid",
            "max_tokens",
        ),
        (
            {"type": "send", "client_id": "x", "content": "hi", "model": "openai/not-enabled"},
            "model_unavailable",
            "model",
        ),
        ({"type": "send", "client_id": "x", "content": "hi", "model": 42}, "invalid", "model"),
        ({"type": "stop", "reply": "abc"}, "invalid", "reply"),
        ({"type": "resume", "reply": 1, "offset": -1}, "invalid", "offset"),
        ({"type": "regenerate", "client_id": "x"}, "invalid", "reply"),
        ({"type": "edit", "message": 1, "client_id": "x"}, "invalid", "content"),
    ],
)
async def test_ws18_wrong_shapes_name_the_field(user, chat_socket, frame, code, field):
    await sync_to_async(ChatModel.objects.create)(
        model_id="openai/gpt-4o-mini", enabled=True, is_default=True
    )
    socket = await chat_socket(user)
    await socket.send(frame)
    error = await socket.recv()
    assert error["type"] == "error" and error["code"] == code, error
    assert error.get("field") == field
    await still_usable(socket)
    await assert_nothing_stored()
    await socket.close()


async def test_ws12_frame_above_the_app_limit(user, chat_socket, settings):
    settings.STREAMCHAT = {**settings.STREAMCHAT, "MAX_FRAME_BYTES": 1000}
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "big", "content": "é" * 600})  # 1200 bytes
    error = await socket.recv()
    assert error["code"] == "message_too_large" and "1000 bytes" in error["message"]
    await still_usable(socket)
    await assert_nothing_stored()
    await socket.close()


async def test_message_longer_than_the_limit(user, chat_socket, settings):
    settings.STREAMCHAT = {**settings.STREAMCHAT, "MAX_MESSAGE_CHARS": 10}
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "long", "content": "x" * 11})
    error = await socket.recv()
    assert error["code"] == "message_too_large" and error["field"] == "content"
    await assert_nothing_stored()
    await socket.close()


async def test_ws11_another_users_ids_answer_like_missing_ones(user_factory, chat_socket):
    owner, intruder = await sync_to_async(user_factory)(), await sync_to_async(user_factory)()
    conversation = await Conversation.objects.acreate(owner=owner, title="private")
    question = await Message.objects.acreate(
        conversation=conversation, role="user", content="secret"
    )
    reply = await Message.objects.acreate(
        conversation=conversation, role="assistant", parent=question, content="secret answer"
    )
    socket = await chat_socket(intruder)
    answers = []
    for target in (conversation.pk, 999_999):
        await socket.send(
            {"type": "send", "client_id": f"i{target}", "content": "hi", "conversation": target}
        )
        answers.append(await socket.recv())
        await socket.send({"type": "subscribe", "conversation": target})
        answers.append(await socket.recv())
    for target in (reply.pk, 999_999):
        for frame in (
            {"type": "resume", "reply": target},
            {"type": "stop", "reply": target},
            {"type": "regenerate", "reply": target, "client_id": f"g{target}"},
        ):
            await socket.send(frame)
            answers.append(await socket.recv())
    await socket.send({"type": "edit", "message": question.pk, "content": "x", "client_id": "ed"})
    answers.append(await socket.recv())
    assert all(a["type"] == "error" and a["code"] == "not_found" for a in answers), answers
    # Same message for theirs and for nothing: nothing tells the ids apart.
    assert answers[0]["message"] == answers[2]["message"]
    assert "secret" not in str(answers)
    assert await Message.objects.acount() == 2 and await Usage.objects.acount() == 0
    await socket.close()


async def test_ws22_second_send_while_streaming_is_busy(user, chat_socket, simulator):
    simulator.token_delay = 0.03
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "one", "content": "First"})
    ack = await socket.recv_until("ack")
    await socket.send(
        {
            "type": "send",
            "client_id": "two",
            "content": "Second",
            "conversation": ack["conversation"],
        }
    )
    busy = await socket.recv_until("error")
    assert busy["code"] == "busy" and busy["client_id"] == "two"
    await socket.send({"type": "stop", "reply": ack["reply"]})
    seen = "".join(f["text"] for f in socket.frames if f["type"] == "delta")
    _, finished = await socket.reply(ack["reply"], known=seen)
    assert finished["status"] == "stopped"
    assert await Message.objects.filter(content="Second").acount() == 0
    await socket.close()
