"""Upstream text that is not clean (issue 15, "bad bytes"; reliability.md, Decisions: Text): bytes
that are not UTF-8 inside a delta, characters split across network reads, surrogate pairs split
across deltas. The simulator sends the raw bytes over real loopback HTTP; the client, and then the
whole chat over the websocket, must keep every valid character: stored text == text the client
received == the valid text, with U+FFFD where the bytes were bad."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamchat.keys import KeyChoice
from streamchat.models import Message
from streamchat.openrouter.client import ChatRequest, ChatStream, open_stream
from streamchat.openrouter.events import ContentDelta, Finish, StreamEvent
from streamchat.simulator import Simulator
from streamchat.streaming.hub import get_hub
from streamchat.text import clean_text

BAD = [b"P-", b"E\xff\xfeF", b"-S"]
BAD_TEXT = "P-E\ufffd\ufffdF-S"


async def stream_of(sim: Simulator, label: str = "") -> tuple[list[StreamEvent], ChatStream]:
    request = ChatRequest(
        model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], label=label
    )
    stream = await open_stream(request, [KeyChoice(id=None, secret=sim.api_key, hint="x")])
    async with stream:
        events = [event async for event in stream]
    return events, stream


def deltas(events: list[StreamEvent]) -> list[str]:
    return [event.text for event in events if isinstance(event, ContentDelta)]


def warnings_of(caplog: Any) -> list[logging.LogRecord]:
    ours = [r for r in caplog.records if r.name.startswith("streamchat")]
    return [r for r in ours if r.levelno >= logging.WARNING]


# -- the client ----------------------------------------------------------------------------------


@pytest.mark.once
async def test_bytes_that_are_not_utf8_keep_the_valid_text_and_warn_once(
    simulator_settings: Simulator, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG, logger="streamchat")
    simulator_settings.next_reply(pieces=[*BAD, b"\xc3(", b"!"])  # two deltas with bad bytes
    events, stream = await stream_of(simulator_settings, label="77")
    assert deltas(events) == ["P-", "E\ufffd\ufffdF", "-S", "\ufffd(", "!"]
    assert isinstance(events[-1], Finish) and events[-1].reason == "stop"
    assert stream.invalid_bytes == 2
    [warning] = warnings_of(caplog)  # once per reply, not once per delta
    message = warning.getMessage()
    assert "not UTF-8" in message and "reply 77" in message
    assert stream.generation_id in message and stream.generation_id.startswith("gen-")
    # Never the text (the generation id is random and may hold "-S": look past it).
    rest = message.replace(stream.generation_id, "")
    assert "P-" not in rest and "-S" not in rest and "E\ufffd" not in rest


@pytest.mark.once
async def test_characters_split_across_network_reads_decode(
    simulator_settings: Simulator, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG, logger="streamchat")
    pieces = ["héllo", " wörld ", "😀", "ß€", " 日本語"]
    simulator_settings.next_reply(pieces=pieces, split_characters=True)
    events, stream = await stream_of(simulator_settings)
    assert deltas(events) == pieces
    assert stream.invalid_bytes == 0 and warnings_of(caplog) == []


@pytest.mark.once
@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (["a", "\ud83d", "\ude00b"], ["a", "😀b"]),  # the pair split across two deltas
        (["a\ud83d", "\ude00"], ["a", "😀"]),
        (["\ud83d", "\ude00", "\ud83d", "\ude01"], ["😀", "😁"]),
        (["x\ud83d\ude00y"], ["x😀y"]),  # the pair in one delta, as escapes
        (["x\ud83d", "y"], ["x", "y"]),  # a high half whose next delta does not pair it
        (["x", "\ude00y"], ["x", "y"]),  # a lone low half
        (["x", "\ud83d"], ["x"]),  # a high half at the very end: never paired
        (["a\x00b\ud800c"], ["abc"]),
    ],
)
async def test_surrogate_pairs_split_across_deltas_are_joined(
    simulator_settings: Simulator, pieces: list[str], expected: list[str]
) -> None:
    simulator_settings.next_reply(pieces=pieces)
    events, _ = await stream_of(simulator_settings)
    assert deltas(events) == expected
    assert isinstance(events[-1], Finish)


def utf16_units(text: str) -> list[str]:
    """``text`` as UTF-16 code units, each a one-character str (astral characters as pairs)."""
    data = text.encode("utf-16-le", "surrogatepass")
    return [chr(int.from_bytes(data[i : i + 2], "little")) for i in range(0, len(data), 2)]


def no_accidental_pairs(text: str) -> bool:
    """A lone high surrogate right before a lone low one would be a pair on the wire."""
    return not any(
        "\ud800" <= a <= "\udbff" and "\udc00" <= b <= "\udfff"
        for a, b in zip(text, text[1:], strict=False)
    )


texts = st.text(
    alphabet=st.sampled_from(["a", " ", "é", "€", "😀", "𝄞", "\ud83d", "\ude00", "\x00", "ß"]),
    min_size=1,
    max_size=12,
).filter(no_accidental_pairs)


@pytest.mark.once
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=texts, data=st.data())
async def test_the_text_does_not_depend_on_where_upstream_cut_it(
    simulator_settings: Simulator, text: str, data: Any
) -> None:
    """Cut the UTF-16 code units anywhere (inside pairs too): the text is the same, the text rule
    (NUL and lone surrogates removed) applied to what was meant."""
    units = utf16_units(text)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(units) - 1)), max_size=6)))
    pieces = ["".join(units[a:b]) for a, b in zip([0, *cuts], [*cuts, len(units)], strict=True)]
    simulator_settings.next_reply(pieces=[p for p in pieces if p])
    events, _ = await stream_of(simulator_settings)
    assert "".join(deltas(events)) == clean_text(text)


# -- the whole chat over the websocket -----------------------------------------------------------


async def settle_runs() -> None:
    for run in list(get_hub().runs.values()):
        await asyncio.wait_for(run.done.wait(), 10)


async def chat(user: Any, chat_socket: Any) -> tuple[str, dict[str, Any], Message]:
    """Send one message; (text the socket received, finish frame, the stored reply)."""
    socket = await chat_socket(user)
    await socket.send({"type": "send", "client_id": "bytes", "content": "Hi"})
    ack = await socket.recv_until("ack")
    text, finished = await socket.reply(ack["reply"])
    await settle_runs()
    await socket.close()
    return text, finished, await Message.objects.aget(pk=ack["reply"])


@pytest.mark.django_db(transaction=True)
async def test_ws_bad_bytes_end_to_end_stored_equals_received(
    user: Any, chat_socket: Any, simulator_settings: Simulator, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="streamchat")
    simulator_settings.next_reply(pieces=BAD)
    received, finished, stored = await chat(user, chat_socket)
    assert received == stored.content == BAD_TEXT
    assert finished["status"] == stored.status == "complete"
    assert finished["length"] == len(BAD_TEXT)
    [warning] = [r for r in warnings_of(caplog) if "not UTF-8" in r.getMessage()]
    [generation] = simulator_settings.state.generations
    assert generation in warning.getMessage() and "P-" not in warning.getMessage()


@pytest.mark.django_db(transaction=True)
async def test_ws_surrogate_pair_split_across_deltas_end_to_end(
    user: Any, chat_socket: Any, simulator_settings: Simulator
) -> None:
    simulator_settings.next_reply(pieces=["smile ", "\ud83d", "\ude00", " done", "\ud83d"])
    received, finished, stored = await chat(user, chat_socket)
    assert received == stored.content == "smile 😀 done"
    assert finished["status"] == "complete" and finished["length"] == len("smile 😀 done")


@pytest.mark.django_db(transaction=True)
async def test_ws_characters_split_across_reads_end_to_end(
    user: Any, chat_socket: Any, simulator_settings: Simulator, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="streamchat")
    pieces = ["Grüße ", "aus ", "Köln ", "😀"]
    simulator_settings.next_reply(pieces=pieces, split_characters=True)
    received, finished, stored = await chat(user, chat_socket)
    assert received == stored.content == "".join(pieces)
    assert finished["status"] == "complete"
    assert not [r for r in warnings_of(caplog) if "not UTF-8" in r.getMessage()]
